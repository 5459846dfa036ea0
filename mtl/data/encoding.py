"""A schema feature's values as int32 ids (schema.py describes the features).

Ids: PAD_ID (0) is padding, never a value; OOV_ID (1) an out-of-vocabulary
or missing value; FIRST_ID (2) on the values: a vocabulary fitted on the
training split (`fit_vocabulary`) or `hash_buckets` buckets of
`stable_hash`. `Lookup` encodes values under one table's encoding
(`Lookups`: each table's, made once); a sequence cell is split
(`split_values`, `last_values`), encoded and padded (`pad_ids`,
`encode_sequences`). The feature kinds (kinds/) encode through these
functions; the loader sizes embedding tables by `table_size`.
"""

import hashlib
from collections.abc import Mapping

import numpy as np
import pandas as pd

PAD_ID, OOV_ID, FIRST_ID = 0, 1, 2


def stable_hash(values, buckets: int) -> np.ndarray:
  """int64 bucket in [0, buckets) of each value's text: the first 8 bytes
  (little-endian) of BLAKE2b-64 of its UTF-8 form, modulo `buckets`.

  Unlike Python's hash() (salted per process) it is the same in every
  process, run and machine. Each distinct value is hashed once.
  """
  values = np.asarray(values, dtype=object).astype(str)
  unique, inverse = np.unique(values, return_inverse=True)
  digests = np.array(
    [
      int.from_bytes(
        hashlib.blake2b(u.encode('utf-8'), digest_size=8).digest(), 'little'
      )
      % buckets
      for u in unique.tolist()
    ],
    dtype=np.int64,
  )
  return digests[inverse.reshape(-1)].reshape(values.shape)


def fit_vocabulary(counts: Mapping[str, int], min_count: int) -> list[str]:
  """The values seen at least `min_count` times, sorted; value i gets id
  FIRST_ID + i."""
  return sorted(v for v, c in counts.items() if c >= min_count)


class Lookup:
  """`encode_ids` under one encoding, its vocabulary indexed once: building
  the pd.Index of a million values costs more than looking up a chunk, so
  the builder makes one Lookup per table, not one per chunk."""

  def __init__(self, encoding: Mapping):
    self.buckets = encoding.get('hash_buckets')
    self.index = None
    if not self.buckets:
      self.index = pd.Index(encoding['vocabulary'], dtype=object)

  def __call__(self, values) -> np.ndarray:
    values = np.asarray(values, dtype=object)
    missing = pd.isna(values)
    text = values.copy()
    text[missing] = ''
    if pd.api.types.infer_dtype(text.reshape(-1), skipna=False) != 'string':
      text = text.astype(str).astype(object)
    if self.buckets:
      ids = FIRST_ID + stable_hash(text, self.buckets)
    else:
      at = self.index.get_indexer(text.reshape(-1)).reshape(text.shape)
      ids = np.where(at < 0, OOV_ID, FIRST_ID + at)
    return np.where(missing, OOV_ID, ids).astype(np.int32)


class Lookups:
  """The Lookup of each table of `tables` (the encoding's), by name, made
  on first use."""

  def __init__(self, tables: Mapping):
    self.tables, self.made = tables, {}

  def __call__(self, table: str) -> Lookup:
    if table not in self.made:
      self.made[table] = Lookup(self.tables[table])
    return self.made[table]


def encode_ids(values, encoding: Mapping) -> np.ndarray:
  """int32 ids of values (strings; None or NaN: missing -> OOV_ID) under an
  encoding {'vocabulary': [...]} or {'hash_buckets': N}."""
  return Lookup(encoding)(values)


def table_size(encoding: Mapping) -> int:
  """Rows of an embedding table: padding, OOV, then the values."""
  size = encoding.get('hash_buckets') or len(encoding['vocabulary'])
  return FIRST_ID + size


def split_values(cell, delimiter: str) -> list[str]:
  """The values of one sequence cell: a list as is, text split by the
  delimiter (empty parts dropped), missing as none."""
  if cell is None or (isinstance(cell, float) and cell != cell):
    return []
  if isinstance(cell, list | tuple | np.ndarray):
    return [str(v) for v in cell]
  return [v for v in str(cell).split(delimiter) if v != '']


def last_values(cells, delimiter: str, max_len: int):
  """(values object [total], lengths int64 [n]): each cell's values
  (split_values), the last `max_len` of them, concatenated oldest first.

  Text cells (or missing ones) are split by pyarrow in one call; cells that
  are lists go through split_values one by one.
  """
  import pyarrow as pa
  import pyarrow.compute as pc

  cells = np.asarray(cells, dtype=object)
  n = len(cells)
  if n and pd.api.types.infer_dtype(cells, skipna=True) in ('string', 'empty'):
    parts = pc.split_pattern(
      pa.array(cells, pa.string(), from_pandas=True), delimiter
    )
    lengths = (
      pc.list_value_length(parts).fill_null(0).to_numpy().astype(np.int64)
    )
    values = parts.flatten().to_numpy(zero_copy_only=False).astype(object)
    rows = np.repeat(np.arange(n), lengths)
    kept = values != ''
    values, rows = values[kept], rows[kept]
    lengths = np.bincount(rows, minlength=n).astype(np.int64)
  else:
    lists = [split_values(c, delimiter) for c in cells]
    lengths = np.array([len(v) for v in lists], np.int64)
    values = np.array([x for v in lists for x in v], dtype=object)
  last = _positions(lengths) >= np.repeat(lengths - max_len, lengths)
  return values[last], np.minimum(lengths, max_len)


def _positions(lengths: np.ndarray) -> np.ndarray:
  """int [sum(lengths)]: each value's position within its row, for rows
  of `lengths` values laid end to end."""
  starts = np.cumsum(lengths) - lengths
  return np.arange(int(lengths.sum())) - np.repeat(starts, lengths)


def pad_ids(ids: np.ndarray, lengths: np.ndarray, max_len: int) -> np.ndarray:
  """int32 [n, max_len]: row r holds the next lengths[r] of `ids` (each at
  most max_len), padded with PAD_ID at the end."""
  out = np.full((len(lengths), max_len), PAD_ID, np.int32)
  out[np.repeat(np.arange(len(lengths)), lengths), _positions(lengths)] = ids
  return out


def encode_sequences(cells, delimiter: str, max_len: int, lookup) -> np.ndarray:
  """int32 [n, max_len]: the last max_len of each cell's split_values,
  encoded by `lookup`, oldest first, padded with PAD_ID at the end; split
  and encoded vectorised (last_values, one `lookup` call)."""
  values, lengths = last_values(cells, delimiter, max_len)
  return pad_ids(lookup(values), lengths, max_len)
