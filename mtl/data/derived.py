"""Derived features of rows given after training: the log continued.

A table's count features (counts.py) and histories (history_tails.py) are
computed from the whole log when the data is prepared. Rows given later to
mtl-predict, mtl-eval on a file or a served model (preprocessing.Encoder)
are taken to follow that log: their count features are the log's per-key
totals plus the given rows strictly earlier in time, and a history column
they lack is the user's last items in the log followed by their own
strictly earlier given rows. So that the given rows' time order, not the
order of their chunks, decides, a file is read whole first (only its key,
time, label and item columns); rows that are not a file (serving's frame)
are their own whole.
"""

import pathlib

import numpy as np

from mtl.data import counts as cf
from mtl.data import history_tails as ht
from mtl.data import schema as sc
from mtl.data.sequences import encode_sequences


class Derived:
  """The derived features of an Encoder's given rows.

  Attributes:
    allowed: columns a given file may hold for them (keys, times, labels,
      items).
  """

  def __init__(self, schema: sc.Schema, encoding: dict, source, lookup):
    self.schema, self.source, self.lookup = schema, source, lookup
    self.fitted = encoding.get('counts', {})
    self.tails = encoding.get('histories', {})
    self.counts = schema.of(sc.Count)
    self.histories = [h for h in schema.of(sc.History) if h.name in self.tails]
    self.allowed = {c for f in self.counts for c in cf.columns(f)}
    self.allowed |= {c for h in self.histories for c in self._columns(h)}
    self.kept = {}

  def _columns(self, h: sc.History) -> list[str]:
    return [h.user, h.time, self.schema[h.item].column]

  def inputs(self, inputs: list[str], found) -> list[str]:
    """The input columns, a history the file lacks replaced by the columns
    it is derived from."""
    out = []
    for c in inputs:
      h = next((h for h in self.histories if h.name == c), None)
      derive = h is not None and c not in found
      out += self._columns(h) if derive else [c]
    return list(dict.fromkeys(out))

  def values(self, f, at) -> np.ndarray:
    """A derived feature's values of the given rows `at` (kinds/base.Rows):
    a count's raw values [n, 1 + L] (counts.continued), a history's item
    ids [n, max_len]: its column's '|'-separated items if the rows have
    it, else continued from the log (history_tails.continued)."""
    if isinstance(f, sc.History) and f.name in at.chunk:
      lookup = at.lookup(self.schema.table_of(f.name))
      return encode_sequences(at.chunk[f.name], '|', f.max_len, lookup)
    return self._values(at.chunk, at.source.path)[f.name][at.offsets]

  def _values(self, chunk, path) -> dict:
    key = str(path)
    if key in self.kept:
      return self.kept[key]
    is_file = pathlib.Path(key).is_file()
    if is_file:
      src = self.source(path)
      found = src.columns()
      want = [c for c in sorted(self.allowed) if c in found]
      parts = list(src.chunks(65536, want))
    else:
      found, parts = list(chunk.columns), [(0, chunk)]
    out = {}
    for f in self.counts:
      labelled = all(c in found for c in cf.label_columns(f))
      keys, times, labels = self._read(f, parts, path, labelled)
      fitted = self.fitted[f.name]
      out[f.name] = cf.continued(f, fitted, keys, times, labels)
    for h in self.histories:
      if h.name in found or not all(c in found for c in self._columns(h)):
        continue  # Given as a column (or check_columns names what lacks).
      users, times, items = self._read(h, parts, path)
      lookup = self.lookup(self.schema.table_of(h.name))
      tails = self.tails[h.name]
      out[h.name] = ht.continued(h, tails, lookup, users, times, items)
    if is_file:
      self.kept = {key: out}  # One file at a time.
    return out

  def _read(self, f, parts, path, labelled=False):
    """(keys or users, times, labels or items) of every given row."""
    keys, times, third = [], [], []
    for start, part in parts:
      offsets = start + np.arange(len(part))
      if isinstance(f, sc.Count):
        keys.append(cf.keys_of(part, f.key))
        times.append(cf.times_of(f, part, offsets, path))
        if labelled:
          third.append(cf.labels_of(f, part, offsets, path))
        continue
      keys.append(cf.keys_of(part, f.user))
      times.append(cf.times_of(f, part, offsets, path))
      third.append(cf.keys_of(part, self.schema[f.item].column))
    third = np.concatenate(third) if third else None
    return np.concatenate(keys), np.concatenate(times), third
