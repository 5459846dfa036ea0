"""A sequence cell's values: split (`split_values`, `last_values`; text
split by one pyarrow call a chunk, `last_text`), encoded by a table's
Lookup (encoding.py) and padded (`pad_ids`, `encode_sequences`): the last
`max_len` values, oldest first, padded with PAD_ID at the end.
"""

import numpy as np

from mtl.data.encoding import PAD_ID, arrow_text


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
  (split_values), the last `max_len` of them, concatenated oldest first
  (`last_text`, the values as Python strings)."""
  values, lengths = last_text(cells, delimiter, max_len)
  if not isinstance(values, np.ndarray):
    values = values.to_numpy(zero_copy_only=False).astype(object)
  return values, lengths


def last_text(cells, delimiter: str, max_len: int):
  """(values [total], lengths int64 [n]) of `last_values`, the values an
  Arrow string array where the cells are text (or missing): split by one
  pyarrow call, the last `max_len` kept by numpy, no Python string made.
  Cells that are lists go through split_values one by one (an object
  array)."""
  import pyarrow as pa
  import pyarrow.compute as pc

  n = len(cells)
  text = arrow_text(cells) if n else None
  if text is None:
    cells = np.asarray(cells, dtype=object)
    lists = [split_values(c, delimiter) for c in cells]
    lengths = np.array([len(v) for v in lists], np.int64)
    values = np.array([x for v in lists for x in v], dtype=object)
    last = _positions(lengths) >= np.repeat(lengths - max_len, lengths)
    return values[last], np.minimum(lengths, max_len)
  parts = pc.split_pattern(text, delimiter)
  counts = pc.list_value_length(parts).fill_null(0).to_numpy()
  values = parts.flatten()
  kept = pc.binary_length(values).to_numpy(zero_copy_only=False) > 0
  if kept.all() and counts.max(initial=0) <= max_len:  # All kept, in order.
    return values, counts.astype(np.int64)
  rows = np.repeat(np.arange(n), counts.astype(np.int64))[kept]
  lengths = np.bincount(rows, minlength=n).astype(np.int64)
  if lengths.max(initial=0) <= max_len:  # Only empty parts dropped.
    return values.filter(pa.array(kept)), lengths
  last = _positions(lengths) >= np.repeat(lengths - max_len, lengths)
  chosen = np.flatnonzero(kept)[last]
  return values.take(pa.array(chosen)), np.minimum(lengths, max_len)


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
  values, lengths = last_text(cells, delimiter, max_len)
  return pad_ids(lookup(values), lengths, max_len)
