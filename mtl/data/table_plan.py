"""Pass 1 of the table builder (table_builder.py): the plan of a table.

Streamed over the files: the split of every row (table_splits.py), and the
derived inputs and labels that need the whole log. Only the columns these
need are read: for a split by time or per user and for histories, each
row's user (factorised to an int), time and item are held, about 20 bytes
a row; a random split holds one byte a row.

History (schema kind 'history'): rows sorted by (user, time, row); a row's
history is the sorted rows of its user with a time strictly below its own
(an equal time is excluded, so is the row itself), the last `max_len` of
them, oldest first (`history_ids`); each user's last `max_len` items are
kept with the encoding (history_tails.py, for prediction). Every split's
rows count as behaviour: a test row's history holds the user's earlier
train rows, and a train row's the earlier test rows (their items, never
their labels).
Sessions (schema kind 'session'): `sessions` on the held users and times.
Counts (schema kind 'count'): each row's key, time and 0/1 labels are held;
cf.Log sums every split's strictly earlier rows of its key.

`split_rows` reads a split's rows by the plan (any global row range: the
in-process builder reads all, a Beam worker its shard's).
"""

import threading

import numpy as np
import pandas as pd

from mtl.data import counts as cf
from mtl.data import history_tails as ht
from mtl.data import schema as sc
from mtl.data.encoding import PAD_ID
from mtl.data.table_files import numbers, texts
from mtl.data.table_splits import split_codes
from mtl.errors import DataError


class Plan:
  """Pass 1: which split each row is in, and the history index."""

  def __init__(self, sources, split: dict, schema: sc.Schema, chunksize):
    self.sources = sources  # [(Source, split code or None)]
    times = {h.time for h in schema.of(sc.History) + schema.of(sc.Session)}
    texts_ = {h.user for h in schema.of(sc.History) + schema.of(sc.Session)}
    texts_ |= {schema[h.item].column for h in schema.of(sc.History)}
    if split['rule'] in ('time', 'user_last'):
      times.add(split['time_column'])
    if split['rule'] == 'user_last':
      texts_.add(split['user_column'])
    holdout = split.get('holdout') or {}
    texts_ |= set(holdout.get('stratify', ()))
    need = sorted(times | texts_)
    held = {c: [] for c in need}
    count_features = schema.of(sc.Count)
    logs = {f.name: (cf.Keys(), [], []) for f in count_features}
    count_columns = [c for f in count_features for c in cf.columns(f)]
    self.sizes = []
    for source, _ in sources:
      n = 0
      usecols = list(dict.fromkeys(need + count_columns))
      usecols = usecols or source.columns()[:1]
      for start, chunk in source.chunks(chunksize, usecols):
        offsets = start + np.arange(len(chunk))
        n += len(chunk)
        for c in need:
          read = numbers if c in times else texts
          held[c].append(read(chunk, c, offsets, source.path))
        for f in count_features:
          keys, time, labels = logs[f.name]
          keys.add(cf.keys_of(chunk, f.key))
          time.append(cf.times_of(f, chunk, offsets, source.path))
          labels.append(cf.labels_of(f, chunk, offsets, source.path))
      if not n:
        raise DataError(f'{source.path}: has no data rows, expected some')
      self.sizes.append(n)
    self.bases = np.cumsum([0] + self.sizes)
    self.num_rows = int(self.bases[-1])
    held = {c: np.concatenate(v) for c, v in held.items()}
    self.codes = split_codes(
      split, held, [c for _, c in self.sources], self.sizes
    )
    self.counts = {}
    for f in count_features:
      keys, time, labels = logs[f.name]
      time, labels = np.concatenate(time), np.concatenate(labels)
      self.counts[f.name] = cf.Log(f, keys, time, labels, self.codes == 0)
    self.history = {
      h.name: self._history(h, held, schema) for h in schema.of(sc.History)
    }
    self.item_ids = {}  # History -> its items' ids (`values`)
    self.lock = threading.Lock()  # Threads encode chunks (`values`).
    self.derived = {}  # '<session>.<label>': [num_rows] by global row
    for f in schema.of(sc.Session):
      users = pd.factorize(held[f.user])[0]
      labels = sessions(users, held[f.time], f.gap)
      for label, values in zip(sc.SESSION_LABELS, labels, strict=True):
        self.derived[f'{f.name}.{label}'] = values

  def __getstate__(self):  # Sent to Beam workers: no lock, no ids yet.
    return {**self.__dict__, 'lock': None, 'item_ids': {}}

  def __setstate__(self, state):
    self.__dict__.update(state, lock=threading.Lock())

  def values(self, f, at) -> np.ndarray:
    """A derived feature's values of the rows of `at` (kinds/base.Rows):
    a count's raw values [n, 1 + L] (cf.Log), a history's item ids
    [n, max_len] (`history_ids`; the log's items encoded once)."""
    if isinstance(f, sc.Count):
      return self.counts[f.name].values(at.rows)
    with self.lock:  # Encoded once, not by each thread that needs it.
      if f.name not in self.item_ids:
        lookup = at.lookup(at.schema.table_of(f.name))
        self.item_ids[f.name] = lookup(self.history[f.name]['items'])
    index = self.history[f.name]
    return history_ids(index, self.item_ids[f.name], at.rows, f.max_len)

  def _history(self, h: sc.History, held, schema) -> dict:
    """Sorted (user, time, row) order; each row's window [begin, end) in it
    and the items in that order (raw text)."""
    n = self.num_rows
    users = pd.factorize(held[h.user])[0]
    order, user_start, run_start = cf.earlier_rows(users, held[h.time])
    end = np.empty(n, np.int64)
    begin = np.empty(n, np.int64)
    end[order] = run_start  # earlier rows of the user: [user_start, run)
    begin[order] = np.maximum(user_start, run_start - h.max_len)
    items = held[schema[h.item].column][order]
    tails = ht.tails(held[h.user][order], items, h.max_len)
    return {'begin': begin, 'end': end, 'items': items, 'tails': tails}


def sessions(users, time, gap: float):
  """(continues [n] int8, remaining [n] int64) of each row of a log.

  A user's rows in (time, row) order form sessions; a gap above `gap`
  between consecutive rows starts a new one. continues: 1 if a row of the
  same session follows; remaining: how many follow.
  """
  n = len(users)
  order = np.lexsort((np.arange(n), time, users))
  u, t = np.asarray(users)[order], np.asarray(time, np.float64)[order]
  new = np.r_[True, (u[1:] != u[:-1]) | (np.diff(t) > gap)]
  last = np.flatnonzero(np.r_[new[1:], True])  # each session's last row
  end = np.repeat(last, np.diff(np.r_[-1, last]))
  remaining = np.empty(n, np.int64)
  remaining[order] = end - np.arange(n)
  return (remaining > 0).astype(np.int8), remaining


def history_ids(index: dict, item_ids: np.ndarray, rows, max_len: int):
  """int32 [n, max_len]: the items of each row's window, oldest first,
  padded with PAD_ID."""
  begin, end = index['begin'][rows], index['end'][rows]
  at = begin[:, None] + np.arange(max_len)
  valid = at < end[:, None]
  picked = item_ids[np.minimum(at, len(item_ids) - 1)]
  return np.where(valid, picked, PAD_ID).astype(np.int32)


def split_rows(schema, plan: Plan, code: int, chunksize, numeric, lo, hi):
  """(source, first data row, chunk, global rows, kept) of each chunk
  holding rows of split `code` among global rows [lo, hi); kept: bool [n],
  those rows. Chunks are cut at multiples of `chunksize` of their file, as
  a whole read cuts them (table_files.Source.chunks)."""
  usecols = schema.columns()
  for k, (source, _) in enumerate(plan.sources):
    base, end = int(plan.bases[k]), int(plan.bases[k + 1])
    if end <= lo or base >= hi:
      continue
    if not (plan.codes[max(lo, base) : min(hi, end)] == code).any():
      continue
    start = (max(lo, base) - base) // chunksize * chunksize
    stop = min(hi, end) - base
    for first, chunk in source.chunks(chunksize, usecols, numeric, start, stop):
      rows = base + first + np.arange(len(chunk))
      for column, values in plan.derived.items():
        chunk[column] = values[rows]
      keep = (plan.codes[rows] == code) & (rows >= lo)
      if keep.any():
        yield source, first, chunk, rows, keep
