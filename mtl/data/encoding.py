"""A schema feature's values as int32 ids (schema.py describes the features).

Ids: PAD_ID (0) is padding, never a value; OOV_ID (1) an out-of-vocabulary
or missing value; FIRST_ID (2) on the values: a vocabulary fitted on the
training split (`fit_vocabulary`; the builder counts by
text_counts.TextCounts, to the same list) or `hash_buckets` buckets of
`stable_hash`. `Lookup` encodes values under one table's encoding
(`Lookups`: each table's, made once); sequences.py splits, encodes and
pads a sequence cell. The feature kinds (kinds/) encode through these
functions; the loader sizes embedding tables by `table_size`.

Text (a pandas str column, an Arrow array, or strings in an object array:
`arrow_text`) stays in Arrow and is dictionary-encoded, so each distinct
value is looked up once; other values (numbers, lists) take the general
path, to the same ids.
"""

import hashlib
import threading
from collections.abc import Mapping

import numpy as np
import pandas as pd

PAD_ID, OOV_ID, FIRST_ID = 0, 1, 2
# An integer's own text of at most 18 digits ('0', '-12'; not '007', '+5',
# '-0' or '1.0'): such values are looked up by number (Lookup._keys).
INTEGER_TEXT = r'^(0|-?[1-9][0-9]{0,17})$'


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
  the builder makes one Lookup per table, not one per chunk. Integers and
  integers' texts are looked up by number (`_keys`); the index of the
  other texts is built when first needed. Threads may share a Lookup
  (Lookups): each index is built once, under a lock."""

  def __init__(self, encoding: Mapping):
    self.buckets = encoding.get('hash_buckets')
    self.vocabulary = None if self.buckets else encoding['vocabulary']
    self._index = self._int_keys = None
    self._lock = threading.Lock()

  @property
  def index(self) -> pd.Index:
    """The vocabulary's pd.Index, its hash table built (pandas builds it on
    first use, which threads must not race to do)."""
    with self._lock:
      if self._index is None:
        index = pd.Index(self.vocabulary, dtype=object)
        index.get_indexer(index[:1])
        self._index = index
      return self._index

  def __call__(self, values) -> np.ndarray:
    import pyarrow as pa

    ints = arrow_ints(values)
    if ints is not None:
      return self._encode_ints(ints)
    text = arrow_text(values)
    if text is not None:
      return self._encode_text(text).reshape(
        (len(text),) if isinstance(values, pa.Array) else np.shape(values)
      )
    values = np.asarray(values, dtype=object)
    missing = pd.isna(values)
    text = values.copy()
    text[missing] = ''
    if pd.api.types.infer_dtype(text.reshape(-1), skipna=False) != 'string':
      text = text.astype(str).astype(object)
    return np.where(missing, OOV_ID, self._ids(text)).astype(np.int32)

  def _ids(self, text: np.ndarray) -> np.ndarray:
    """int64 ids of an object array of strings (none missing)."""
    if self.buckets:
      return FIRST_ID + stable_hash(text, self.buckets)
    at = self.index.get_indexer(text.reshape(-1)).reshape(text.shape)
    return np.where(at < 0, OOV_ID, FIRST_ID + at)

  def _encode_text(self, text) -> np.ndarray:
    """int32 ids of an Arrow string array: each distinct value looked up
    once (dictionary-encoded), missing ones OOV_ID."""
    import pyarrow.compute as pc

    coded = pc.dictionary_encode(text)
    distinct = coded.dictionary
    ids = np.append(self._text_ids(distinct), OOV_ID)
    at = coded.indices.fill_null(len(distinct)).to_numpy(zero_copy_only=False)
    return ids[at].astype(np.int32)

  def _text_ids(self, distinct) -> np.ndarray:
    """int64 ids of an Arrow string array (none missing): the values that
    are an integer's own text (INTEGER_TEXT) looked up by number
    (`_keys`), the others by the index."""
    import pyarrow as pa
    import pyarrow.compute as pc

    own = None
    if not self.buckets and len(distinct):
      own = pc.match_substring_regex(distinct, INTEGER_TEXT)
      own = own.to_numpy(zero_copy_only=False)
    if own is None or not own.any():
      return self._ids(distinct.to_numpy(zero_copy_only=False).astype(object))
    ids = np.empty(len(distinct), np.int64)
    numbers = pc.cast(distinct.filter(pa.array(own)), pa.int64()).to_numpy()
    ids[own] = self._number_ids(numbers)
    if not own.all():
      rest = distinct.filter(pa.array(~own))
      ids[~own] = self._ids(rest.to_numpy(zero_copy_only=False).astype(object))
    return ids

  def _number_ids(self, numbers: np.ndarray) -> np.ndarray:
    """int64 ids of int64 values with at most 18 digits: the vocabulary
    entry that is each one's text (`_keys`), else OOV_ID."""
    keys, key_ids = self._keys()
    if not len(keys):
      return np.full(len(numbers), OOV_ID, np.int64)
    pos = np.minimum(np.searchsorted(keys, numbers), len(keys) - 1)
    return np.where(keys[pos] == numbers, key_ids[pos], OOV_ID)

  def _encode_ints(self, ints) -> np.ndarray:
    """int32 ids of an Arrow integer array (a Parquet id column, read as
    numbers): the ids of their text, each distinct value looked up once,
    by number where every distinct value has at most 18 digits (the
    vocabulary's entries that are an integer's text, as int64: an integer
    is another text's value only if that text is not its own), else by
    its text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    coded = pc.dictionary_encode(ints)
    distinct = coded.dictionary
    at = coded.indices.fill_null(len(distinct)).to_numpy(zero_copy_only=False)
    bounds = pc.min_max(distinct)
    lo, hi = (bounds[k].as_py() or 0 for k in ('min', 'max'))
    if self.buckets or max(-lo, hi) >= 10**18:
      text = distinct.cast(pa.string()).to_numpy(zero_copy_only=False)
      found = self._ids(text.astype(object))
    else:
      numbers = distinct.cast(pa.int64()).to_numpy(zero_copy_only=False)
      found = self._number_ids(numbers)
    return np.append(found, OOV_ID)[at].astype(np.int32)

  def _keys(self) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values sorted, their ids) of the vocabulary's entries that
    are an integer's own text ('0', '-12'; not '007', '+5' or '1.0') of
    at most 18 digits; built once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    with self._lock:
      if self._int_keys is None:
        vocab = pa.array(self.vocabulary, pa.string())
        own = pc.match_substring_regex(vocab, INTEGER_TEXT)
        at = np.flatnonzero(own.to_numpy(zero_copy_only=False))
        values = pc.cast(vocab.filter(own), pa.int64()).to_numpy()
        order = np.argsort(values, kind='stable')
        ids = (FIRST_ID + at[order]).astype(np.int64)
        self._int_keys = (values[order], ids)
      return self._int_keys


def arrow_ints(values):
  """The Arrow integer array of `values` where they are one (a Parquet id
  column read as numbers: table_files' `numeric`), else None."""
  import pyarrow as pa

  dtype = getattr(values, 'dtype', None)
  if isinstance(dtype, pd.ArrowDtype):
    if pa.types.is_integer(dtype.pyarrow_dtype):
      return pa.array(values)
    return None
  if isinstance(values, pa.Array) and pa.types.is_integer(values.type):
    return values
  return None


def arrow_text(values):
  """A flat Arrow string array of `values` (a pandas str Series, an Arrow
  array, or an array of strings and missing values), None where some value
  is not a string (the caller's general path)."""
  import pyarrow as pa

  ints = arrow_ints(values)
  if ints is not None:  # An integer's text, as Parquet cells are read.
    return ints.cast(pa.string())
  dtype = getattr(values, 'dtype', None)
  if isinstance(dtype, pd.ArrowDtype) and pa.types.is_floating(
    dtype.pyarrow_dtype
  ):  # A Parquet float column read as numbers: its text, as read.
    return pa.array(values).cast(pa.string())
  if isinstance(values, pd.Series) and isinstance(values.dtype, pd.StringDtype):
    values = pa.array(values, from_pandas=True)
  if isinstance(values, pa.ChunkedArray):
    values = values.combine_chunks()
  if isinstance(values, pa.Array):
    text = pa.types.is_string(values.type) or pa.types.is_large_string(
      values.type
    )
    return values if text else None
  values = np.asarray(values, dtype=object).reshape(-1)
  kind = pd.api.types.infer_dtype(values, skipna=True) if len(values) else ''
  if kind not in ('string', 'empty'):
    return None
  return pa.array(values, pa.large_string(), from_pandas=True)


class Lookups:
  """The Lookup of each table of `tables` (the encoding's), by name, made
  on first use."""

  def __init__(self, tables: Mapping):
    self.tables, self.made = tables, {}
    self.lock = threading.Lock()  # Threads encoding chunks share them.

  def __call__(self, table: str) -> Lookup:
    with self.lock:
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
