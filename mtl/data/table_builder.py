"""TFDS builder of a user's table, described only by its schema (schema.py).

Issue 14 items 2 and 3. Files: CSV or TSV (optionally gzipped: pandas reads
'.gz' by its suffix) or Parquet, with a header line (or `column_names` for a
headerless file), read in chunks of `chunksize` rows (pyarrow record batches
for Parquet; table_files.py), side tables joined by key: no file but a side
table is ever whole in memory. Three streaming passes:

1. plan: the split of every row, and the behaviour-history index. Only the
   columns these need are read: for a split by time or per user and for
   histories, each row's user (factorised to an int), time and item are
   held, about 20 bytes a row; a random split holds one byte a row.
   Splits: 'files' (train / validation / test given as files), 'random'
   (a numpy default_rng(seed) permutation: the first round(validation_fraction
   * N) rows validation, the next round(test_fraction * N) test, as
   movielens.py), 'time' (rows ordered by time, ties by row: the
   last test_fraction test, the validation_fraction before them
   validation), 'user_last' (each user's last `last_n` rows by time test,
   the `last_n` before them validation).
   History (schema kind 'history'): rows sorted by (user, time, row); a row's
   history is the sorted rows of its user with a time strictly below its
   own (an equal time is excluded, so is the row itself), the last
   `max_len` of them, oldest first; each user's last `max_len` items are
   kept with the encoding (history_tails.py, for prediction). Every
   split's rows count as behaviour: a test row's history holds the user's
   earlier train rows, and a train row's the earlier test rows (their
   items, never their labels).
   Sessions (schema kind 'session'): `sessions` on the held users and times.
   Counts (schema kind 'count'): each row's key, time and 0/1 labels are
   held; cf.Log sums every split's strictly earlier rows of its key.
2. fit, on the training rows only: each vocabulary (value counts, then
   `min_count`), each dense feature's moments after its transform and over
   its present values (cb.Moments), each regression label's moments on its
   sample space.
3. encode, split by split, into records of exactly `chunksize` rows
   (cb.fixed_blocks): 'dense' [n, F] f32, 'sparse' [n, S] i32 (a
   categorical feature one column, a sequence or history `max_len`),
   'labels' and 'mask' [n, T] f32, 'row' [n] i64 (the row's position in the
   concatenated files). The encoding (vocabularies, moments, history index
   sizes) is the builder's metadata. The records go straight to array_record
   shards of SHARD_RECORDS records (a tfds.core.ShardBasedBuilder): no
   shuffle buffer, so memory stays one shard (~80 MB at the scale table's
   80-byte rows) whatever the split's size, and TensorFlow is not needed
   (TFDS's GeneratorBasedBuilder holds a split's records until it ends, and
   spills past 1 GiB through tf.io; with keys in order, it then sorts the
   whole spill in memory: 6.5 GB at 50M rows).

A bad value is one DataError line naming the file, its 1-based data row
(the header not counted), the column, what was found and what was expected.
"""

import dataclasses
import functools
import hashlib
import itertools
import json
import pathlib
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from mtl.data import cache, delimiters
from mtl.data import counts as cf
from mtl.data import csv_builder as cb
from mtl.data import history_tails as ht
from mtl.data import schema as sc
from mtl.data.table_files import (
  Joined,
  Source,
  cell_values,
  numbers,
  texts,
  to_float,
)
from mtl.errors import DataError

SPLITS = ('train', 'validation', 'test')
SPLIT_RULES = ('files', 'random', 'time', 'user_last')
# Records (of `chunksize` rows) per array_record shard: 16 x 65,536 rows.
SHARD_RECORDS = 16


class TableConfig(tfds.core.BuilderConfig):
  """Everything that decides the prepared data; its digest names the cache."""

  def __init__(self, *, spec: dict):
    # A file known by its sha256 is that file wherever it lies.
    files = {
      k: {x: v for x, v in f.items() if 'sha256' not in f or x != 'path'}
      for k, f in spec['files'].items()
    }
    text = json.dumps({**spec, 'files': files}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    super().__init__(
      name=f'{spec["name"]}-{digest}',
      description=f'{spec["name"]}, prepared by its schema',
    )
    self.spec = spec


def spec_of(
  *,
  name: str,
  sources: dict[str, Source | None],
  sha256: dict[str, str],
  split: dict,
  features: dict,
  tasks: dict,
  task_order: tuple[str, ...],
  joins: dict | None = None,
) -> dict:
  """The JSON-able description of a table for TableConfig; each file is
  identified by its sha256 (`sha256[key]`, the registered sum), else by its
  absolute path, size and modification time, so an edited file is prepared
  again."""
  files = {}
  for key, source in sources.items():
    if source is None:
      continue
    path = pathlib.Path(source.path)
    files[key] = {**dataclasses.asdict(source), 'path': str(path.resolve())}
    if key in sha256:
      files[key]['sha256'] = sha256[key].lower()
    else:
      stat = path.stat()
      files[key].update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
  return {
    'name': name,
    'files': files,
    'split': split,
    'features': features,
    'tasks': tasks,
    'task_order': list(task_order),
    **({'joins': joins} if joins else {}),
  }


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
    self.codes = self._codes(split, held)
    self.counts = {}
    for f in count_features:
      keys, time, labels = logs[f.name]
      time, labels = np.concatenate(time), np.concatenate(labels)
      self.counts[f.name] = cf.Log(f, keys, time, labels, self.codes == 0)
    self.history = {
      h.name: self._history(h, held, schema) for h in schema.of(sc.History)
    }
    self.derived = {}  # '<session>.<label>': [num_rows] by global row
    for f in schema.of(sc.Session):
      users = pd.factorize(held[f.user])[0]
      labels = sessions(users, held[f.time], f.gap)
      for label, values in zip(sc.SESSION_LABELS, labels, strict=True):
        self.derived[f'{f.name}.{label}'] = values

  def _codes(self, split, held) -> np.ndarray:
    n, rule = self.num_rows, split['rule']
    if rule == 'files':
      codes = np.repeat(
        np.array([c for _, c in self.sources], np.int8), self.sizes
      )
      if split.get('holdout'):
        train = np.flatnonzero(codes == 0)
        by = [held[c][train] for c in split['holdout']['stratify']]
        codes[train[holdout(by, len(train), **split['holdout'])]] = 1
      return codes
    codes = np.zeros(n, np.int8)
    if rule == 'user_last':
      users = pd.factorize(held[split['user_column']])[0]
      order = np.lexsort((np.arange(n), held[split['time_column']], users))
      ordered = users[order]
      last = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
      # Rows after each position within its user: the user's last row 0.
      end = np.repeat(last, np.diff(np.r_[-1, last]))
      after = end - np.arange(n)
      k = split['last_n']
      codes[order[after < k]] = 2
      codes[order[(after >= k) & (after < 2 * k)]] = 1
      return codes
    if rule == 'random':
      order = np.random.default_rng(split['seed']).permutation(n)
      n_val = round(split['validation_fraction'] * n)
      n_test = round(split['test_fraction'] * n)
      codes[order[:n_val]] = 1
      codes[order[n_val : n_val + n_test]] = 2
      return codes
    order = np.lexsort((np.arange(n), held[split['time_column']]))
    n_val = round(split['validation_fraction'] * n)
    n_test = round(split['test_fraction'] * n)
    codes[order[n - n_test :]] = 2
    codes[order[n - n_test - n_val : n - n_test]] = 1
    return codes

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


def holdout(by, n: int, *, fraction: float, seed: int, stratify) -> np.ndarray:
  """bool [n]: the rows held out, `fraction` of each group of equal `by`
  values (groups in sorted order; one group if `by` is empty).

  Each group of m rows gives round(fraction * m) rows, but at least one and
  at most m - 1 when m >= 2 (so a rare label has rows on both sides), drawn
  by one numpy default_rng(seed), group after group.
  """
  del stratify  # The columns; `by` holds their values.
  keys = np.zeros(n, np.int64)
  if by:  # '\x1f' sorts before any text: the tuples' order.
    joined = np.asarray(by[0], str)
    for values in by[1:]:
      joined = np.char.add(np.char.add(joined, '\x1f'), np.asarray(values, str))
    keys = np.unique(joined, return_inverse=True)[1]
  rng = np.random.default_rng(seed)
  chosen = np.zeros(n, bool)
  for group in range(int(keys.max(initial=-1)) + 1):
    rows = np.flatnonzero(keys.reshape(-1) == group)
    k = round(fraction * len(rows))
    if len(rows) >= 2:
      k = min(max(k, 1), len(rows) - 1)
    chosen[rng.choice(rows, size=k, replace=False)] = True
  return chosen


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
  return np.where(valid, picked, sc.PAD_ID).astype(np.int32)


class Table(cache.ShardBuilder):
  """A table prepared by its schema (see the module docstring)."""

  name = 'table'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Schema-described tables, streamed.'}
  BUILDER_CONFIGS = []

  @tfds.core.utils.classproperty
  @classmethod
  def _checksums_path(cls):
    return None  # The user's own files: nothing is downloaded.

  def __init__(self, *, chunksize: int = cb.DEFAULT_CHUNKSIZE, **kwargs):
    spec = kwargs['config'].spec
    self.schema = sc.parse(spec['features'], spec['tasks'], spec['task_order'])
    self.chunksize = chunksize
    super().__init__(**kwargs)

  def widths(self) -> tuple[int, int, int]:
    """(F dense, S sparse, T tasks) columns of a record."""
    s = self.schema
    dense = sum(1 + f.missing_indicator for f in s.of(sc.Dense))
    dense += sum(len(cf.outputs(f)) for f in s.of(sc.Count))
    sparse = len(s.of(sc.Categorical)) + sum(
      f.max_len for f in s.of(sc.Sequence) + s.of(sc.History)
    )
    return dense, sparse, len(s.tasks)

  def _info(self) -> tfds.core.DatasetInfo:
    # TFDS cannot read back a [n, 0] tensor: an empty block stores one
    # column of zeros, which the loader drops (table.py).
    dense, sparse, tasks = (max(w, 1) for w in self.widths())

    def column(dtype, width=None):
      shape = (None,) if width is None else (None, width)
      return tfds.features.Tensor(shape=shape, dtype=dtype)

    return tfds.core.DatasetInfo(
      builder=self,
      description='A table prepared by its feature schema.',
      features=tfds.features.FeaturesDict(
        {
          'dense': column(np.float32, dense),
          'sparse': column(np.int32, sparse),
          'labels': column(np.float32, tasks),
          'mask': column(np.float32, tasks),
          'row': column(np.int64),
        }
      ),
      metadata=tfds.core.MetadataDict(),
      disable_shuffling=True,
    )

  def _sources(self) -> list[tuple[Source | Joined, int | None]]:
    spec = self.builder_config.spec
    files = spec['files']

    def source(key):
      f = files[key]
      return Source(
        f['path'], f['fmt'], f['delimiter'], tuple(f['column_names']),
        f.get('encoding', 'utf-8'),
      )  # fmt: skip

    joins = [
      (source(f'join:{name}'), j['on'], j['key'])
      for name, j in spec.get('joins', {}).items()
    ]
    wrap = (lambda s: Joined(s, joins)) if joins else (lambda s: s)
    if spec['split']['rule'] == 'files':
      return [
        (wrap(source(k)), code) for code, k in enumerate(SPLITS) if k in files
      ]
    return [(wrap(source('table')), None)]

  def _shard_iterators_per_split(self, dl_manager):
    del dl_manager
    sources = self._sources()
    for source, _ in sources:
      for f in self.schema.of(sc.Count):
        cf.check_columns(f, source.columns(), source.path)
      sc.check_columns(self.schema, source.columns(), source.path)
    split = self.builder_config.spec['split']
    plan = Plan(sources, split, self.schema, self.chunksize)
    for code, name in enumerate(SPLITS):
      if not (plan.codes == code).any():
        raise DataError(
          f'{self.builder_config.spec["name"]}: the {split["rule"]!r} split '
          f'leaves no {name} rows, expected some'
        )
    encoding = self._fit(plan)
    self.info.metadata.update(encoding)
    self.info.metadata['block_rows'] = self.chunksize
    return {
      name: self._shards(plan, code, encoding)
      for code, name in enumerate(SPLITS)
    }

  def _shards(self, plan, code, encoding) -> list:
    """The split's shards: generators of SHARD_RECORDS records of
    `chunksize` rows each (keys 0, 1, ...; the last record and shard may be
    shorter), all drawing on one pass over the split's rows. TFDS writes
    them one after the other, and holds one shard's records while it does
    (writer.ShardWriter counts them after writing): memory is bounded by
    the shard, whatever the split's size."""
    records = -(-encoding['rows'][SPLITS[code]] // self.chunksize)
    blocks = None

    def shard(count):
      nonlocal blocks
      if blocks is None:
        chunks = self._encoded_chunks(plan, code, encoding)
        blocks = enumerate(cb.fixed_blocks(chunks, self.chunksize))
      return itertools.islice(blocks, count)

    return [
      functools.partial(shard, min(SHARD_RECORDS, records - first))
      for first in range(0, records, SHARD_RECORDS)
    ]

  def _rows(self, plan: Plan, code: int) -> Iterator:
    """(source, first data row, chunk, global rows) of split `code`."""
    usecols = self.schema.columns()
    for k, (source, _) in enumerate(plan.sources):
      if not (plan.codes[plan.bases[k] : plan.bases[k + 1]] == code).any():
        continue
      for start, chunk in source.chunks(self.chunksize, usecols):
        rows = plan.bases[k] + start + np.arange(len(chunk))
        for column, values in plan.derived.items():
          chunk[column] = values[rows]
        keep = plan.codes[rows] == code
        if keep.any():
          yield source, start, chunk, rows, keep

  def _fit(self, plan: Plan) -> dict:
    s = self.schema
    counted = [
      f
      for f in s.of(sc.Categorical) + s.of(sc.Sequence)
      if s.table_of(f.name) == f.name and not f.hash_buckets
    ]
    counts = {f.name: Counter() for f in counted}
    dense = {f.name: cb.Moments((f.name,)) for f in s.of(sc.Dense)}
    labels = {t.name: cb.Moments((t.name,)) for t in s.tasks}
    fitted = {f.name: cb.Moments(tuple(cf.outputs(f))) for f in s.of(sc.Count)}
    split_by = delimiters.DelimiterCheck(s.of(sc.Sequence))
    for source, start, chunk, rows, keep in self._rows(plan, 0):
      for name, log in plan.counts.items():
        fitted[name].update(log.values(rows[keep]))
      chunk = chunk[keep]
      offsets = start + np.flatnonzero(keep)
      for f in s.of(sc.Sequence):
        split_by.update(f, chunk[f.column], source.path)
      for f in counted:
        if isinstance(f, sc.Sequence):
          values = sc.last_values(chunk[f.column], f.delimiter, f.max_len)[0]
        else:
          values = cell_values(f, chunk).dropna().astype(str)
        counts[f.name].update(pd.Series(values).value_counts().to_dict())
      for f in s.of(sc.Dense):
        x = self._dense_raw(f, chunk, offsets, source)
        present = x[np.isfinite(x)]
        dense[f.name].update(present[:, None])
      for t in s.tasks:
        y, m = self._label(t, chunk, offsets, source)
        labels[t.name].update(y[m > 0][:, None].astype(np.float64))
    split_by.finish()  # Before any vocabulary is fitted on whole strings.
    tables = {}
    for f in s.of(sc.Categorical) + s.of(sc.Sequence):
      if s.table_of(f.name) != f.name:
        continue
      if f.hash_buckets:
        tables[f.name] = {'hash_buckets': f.hash_buckets}
      else:
        tables[f.name] = {
          'vocabulary': sc.fit_vocabulary(counts[f.name], f.min_count)
        }
    out = {
      'tables': tables,
      'dense': {n: m.finish()[n] for n, m in dense.items()},
      'labels': {n: m.finish()[n] for n, m in labels.items()},
      'rows': {
        name: int((plan.codes == code).sum())
        for code, name in enumerate(SPLITS)
      },
    }
    if plan.history:  # Each user's latest items, for prediction.
      out['histories'] = {n: h['tails'] for n, h in plan.history.items()}
    if fitted:  # Only then: other tables' metadata keeps its keys.
      out['counts'] = {
        name: {
          'moments': fitted[name].finish(),
          'priors': log.priors,
          'totals': log.totals,
        }
        for name, log in plan.counts.items()
      }
    return out

  def _dense_raw(self, f: sc.Dense, chunk, offsets, source) -> np.ndarray:
    """float64 [n] after the transform; NaN where missing."""
    x = numbers(
      {f.column: cell_values(f, chunk)}, f.column, offsets, source.path,
      f.missing,
    )  # fmt: skip
    if f.normalize in ('log1p', 'log1p_standard'):
      bad = x <= -1
      if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
          f'{source.path}: row {offsets[i] + 1} column {f.column!r} is '
          f'{x[i]:g}, expected a number > -1 (normalize log1p)'
        )
      x = np.log1p(x)
    return x

  def _label(self, t: sc.TaskSpec, chunk, offsets, source):
    """(label float32 [n] after transform, mask float32 [n])."""
    n = len(chunk)
    mask = np.ones(n, np.float32)
    if t.where is not None:
      w = numbers(chunk, t.where.column, offsets, source.path)
      mask = t.where(w).astype(np.float32)
    on = mask > 0

    def check(bad, column, found, expected):
      """One DataError at the first sample-space row where `bad` holds."""
      bad = bad & on
      if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
          f'{source.path}: row {offsets[i] + 1} column {column!r} is '
          f'{found(i)}, expected {expected}'
        )

    raw = chunk[t.label]
    values = to_float(raw)
    check(
      ~np.isfinite(values),
      t.label,
      lambda i: 'empty' if pd.isna(raw.iloc[i]) else repr(raw.iloc[i]),
      f'a finite number (the label of task {t.name!r})',
    )
    values = np.where(on, values, 0.0)
    if t.divide_by is not None:
      d = numbers(chunk, t.divide_by, offsets, source.path)
      check(
        ~(d > 0),
        t.divide_by,
        lambda i: f'{d[i]:g}',
        f"a number > 0 (the divisor of task {t.name!r}; a 'where' such as "
        f"'{t.divide_by} > 0' leaves such rows out)",
      )
      values = np.where(on, values / np.where(on, d, 1.0), 0.0)
    if t.condition is not None:
      values = t.condition(values).astype(np.float64)
    elif t.kind == 'binary':
      check(
        ~np.isin(values, (0.0, 1.0)),
        t.label,
        lambda i: repr(raw.iloc[i]),
        f'0 or 1 (binary task {t.name!r}; a condition label such as '
        "'rating >= 4' makes one)",
      )
    if t.kind == 'weighted_logistic':
      check(
        values < 0,
        t.label,
        lambda i: f'{values[i]:g}',
        f'a watch time >= 0 (weighted_logistic task {t.name!r})',
      )
    if t.transform == 'log1p':
      check(
        values <= -1,
        t.label,
        lambda i: f'{values[i]:g}',
        'a number > -1 (transform log1p)',
      )
      values = np.where(on, np.log1p(np.maximum(values, -0.5)), 0.0)
    return values.astype(np.float64), mask

  def _encoded_chunks(self, plan, code, encoding):
    s = self.schema
    lookups = {
      name: sc.Lookup(table) for name, table in encoding['tables'].items()
    }
    item_ids = {
      h.name: lookups[s.table_of(h.name)](plan.history[h.name]['items'])
      for h in s.of(sc.History)
    }
    for source, start, chunk, rows, keep in self._rows(plan, code):
      chunk, rows = chunk[keep], rows[keep]
      offsets = start + np.flatnonzero(keep)
      dense, sparse = [], []
      for f in s.features:
        if isinstance(f, sc.Dense):
          dense += self._dense(f, chunk, offsets, source, encoding)
        elif isinstance(f, sc.Count):
          x = plan.counts[f.name].values(rows)
          dense += cf.standardise(f, x, encoding['counts'][f.name])
        elif isinstance(f, sc.Categorical):
          ids = lookups[f.name](cell_values(f, chunk).to_numpy(object))
          sparse.append(ids[:, None])
        elif isinstance(f, sc.Sequence):
          sparse.append(
            sc.encode_sequences(
              chunk[f.column], f.delimiter, f.max_len,
              lookups[s.table_of(f.name)],
            )
          )  # fmt: skip
        elif isinstance(f, sc.History):
          sparse.append(
            history_ids(plan.history[f.name], item_ids[f.name], rows, f.max_len)
          )
      labels, masks = [], []
      for t in s.tasks:
        y, m = self._label(t, chunk, offsets, source)
        if t.scale != 'none':
          stats = encoding['labels'][t.name]
          y = y - stats['mean']
          if t.scale == 'standard':
            y = y / stats['std']
          y = np.where(m > 0, y, 0.0)
        labels.append(y)
        masks.append(m)
      n = len(rows)
      yield {
        'dense': np.stack(dense, 1).astype(np.float32)
        if dense
        else np.zeros((n, 1), np.float32),
        'sparse': np.concatenate(sparse, 1).astype(np.int32)
        if sparse
        else np.zeros((n, 1), np.int32),
        'labels': np.stack(labels, 1).astype(np.float32),
        'mask': np.stack(masks, 1).astype(np.float32),
        'row': rows.astype(np.int64),
      }

  def _dense(self, f, chunk, offsets, source, encoding) -> list:
    x = self._dense_raw(f, chunk, offsets, source)
    missing = ~np.isfinite(x)
    stats = encoding['dense'][f.name]
    if f.normalize in ('standard', 'log1p_standard'):
      x = (x - stats['mean']) / stats['std']
      fill = 0.0 if f.missing in ('mean', 'zero') else np.nan
    else:
      fill = stats['mean'] if f.missing == 'mean' else 0.0
    out = [np.where(missing, fill, x)]
    if f.missing_indicator:
      out.append(missing.astype(np.float64))
    return out
