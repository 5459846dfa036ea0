"""Streaming CSV reading for the builders: no raw file is held in memory.

Used by the table path (table_files.py, table_builder.py) and
census-income's reader (census_income_builder.py):

- `read_chunks` reads a file with pandas in chunks of `chunksize` rows
  (every value a string; a row with too many fields is one DataError);
  `not_utf8` and `check_rows` name a byte that is not UTF-8 (file, row,
  column, offset) and an empty or header-only file; `not_gzip` a .gz file
  that is truncated or not gzip at all.
- `Moments` takes a numeric column's mean and population std in one
  streaming pass (chunks merged with Chan et al.'s pairwise update, float64).
- `fixed_blocks` regroups encoded chunks into records of exactly
  `chunksize` rows (the last record of a split may be shorter), so that
  record k of every split holds rows [k * chunksize, (k + 1) * chunksize)
  and a process can read only the records of its share
  (prepared.read_rows). The record size is kept in the prepared metadata
  ('block_rows'), so a cache prepared with one chunk size reads back under
  any other. One row per record would be slow to read back: TFDS decodes
  each record in Python (census_income_builder.py).
"""

import gzip
import pathlib
import zlib
from collections.abc import Iterator

import numpy as np
import pandas as pd

from mtl import errors

DataError = errors.DataError
DEFAULT_CHUNKSIZE = 65_536


def _open_bytes(path: pathlib.Path):
  return (gzip.open if path.suffix == '.gz' else open)(path, 'rb')


def first_bad_utf8(path, sep: str = ',') -> tuple[int, int, int, int] | None:
  """(byte offset, 1-based line, 0-based field, byte) of the first byte of a
  (gzip-decompressed) file that is not UTF-8, or None if there is none."""
  base, lines, line, pending = 0, 0, b'', b''
  with _open_bytes(pathlib.Path(path)) as f:
    while True:
      block = f.read(1 << 20)
      data = pending + block
      try:
        data.decode('utf-8')
        good, pending = len(data), b''
      except UnicodeDecodeError as e:
        if block and e.end == len(data) and 'end of data' in e.reason:
          good, pending = e.start, data[e.start :]  # Split by the block.
        else:
          before = data[: e.start]
          current = before[before.rfind(b'\n') + 1 :]
          if b'\n' not in before:
            current = line + before
          field = current.count(sep.encode())
          at = base + e.start
          return at, lines + before.count(b'\n') + 1, field, data[e.start]
      done = data[:good]
      lines += done.count(b'\n')
      line = line + done if b'\n' not in done else done[done.rfind(b'\n') + 1 :]
      base += good
      if not block:
        return None


def not_utf8(path, *, sep: str = ',', names=None, header: bool = True):
  """The DataError of a file with a byte that is not UTF-8: file, 1-based
  data row (the header is row 0), column (`names`, else the header's) and
  byte offset."""
  if names is None and header:
    with _open_bytes(pathlib.Path(path)) as f:
      names = f.readline().decode('utf-8', 'replace').strip().split(sep)
  found = first_bad_utf8(path, sep)
  if found is None:  # pandas saw one where this scan does not: say so.
    return DataError(f'{path}: is not UTF-8 text, expected UTF-8')
  at, line, field, byte = found
  if header and line == 1:
    where = f'the header, column {field + 1}'
  else:
    name = names[field] if names and field < len(names) else f'{field + 1}'
    where = f'row {line - 1 if header else line} column {name!r}'
  return DataError(
    f'{path}: {where} (byte offset {at}) has byte 0x{byte:02x}, which is not '
    'UTF-8; expected UTF-8 text'
  )


# What reading a damaged .gz file raises: truncated (EOFError), not gzip at
# all (BadGzipFile), or its deflate stream damaged (zlib.error).
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def not_gzip(path, error: Exception) -> DataError:
  """The DataError of a .gz file that cannot be decompressed."""
  return DataError(
    f'{path}: cannot be decompressed ({error}), expected a whole gzip file'
  )


def check_rows(path, *, header: bool) -> None:
  """Raises a one-line DataError if a file is empty, or (with a header)
  holds only its header: blank lines are no rows."""
  with _open_bytes(pathlib.Path(path)) as f:
    first = f.readline()
    if not first.strip() and not header:
      first = next((x for x in f if x.strip()), b'')
    if not first.strip():
      raise DataError(f'{path}: is empty, expected CSV rows')
    if header and not any(x.strip() for x in f):
      raise DataError(
        f'{path}: has a header but no data rows, expected at least one row'
      )


def read_chunks(
  path: pathlib.Path, *, chunksize: int, **read_csv_kwargs
) -> Iterator[tuple[int, pd.DataFrame]]:
  """Yields (index of its first data row, chunk) over a CSV file.

  Every value is read as a string, empty fields as NaN.
  """
  if not isinstance(chunksize, int) or chunksize <= 0:
    raise DataError(f'chunksize is {chunksize!r}, expected a positive int')
  start = 0
  try:
    reader = pd.read_csv(
      path,
      chunksize=chunksize,
      dtype=str,
      keep_default_na=False,
      na_values=[''],
      **read_csv_kwargs,
    )
    for chunk in reader:
      yield start, chunk
      start += len(chunk)
  except pd.errors.ParserError as err:  # a row with too many fields
    raise DataError(
      f'{path}: cannot be parsed as CSV: {" ".join(str(err).split())}'
    ) from err
  except pd.errors.EmptyDataError as err:
    raise DataError(f'{path}: is empty, expected CSV rows') from err
  except GZIP_ERRORS as err:
    raise not_gzip(path, err) from err
  except UnicodeDecodeError as err:
    header = read_csv_kwargs.get('header', 'infer') is not None
    names = read_csv_kwargs.get('names')
    raise not_utf8(
      path, sep=read_csv_kwargs.get('sep', ','), names=names, header=header
    ) from err


class Moments:
  """Streaming mean and population std of numeric columns (float64).

  Each chunk is summed apart, shifted by its own first row (so a constant
  column has exactly its value as mean and std 0, then 1, instead of
  rounding noise that standardisation would blow up); `finish` folds the
  chunks' (count, mean, m2) in the order of their keys (Chan, Golub and
  LeVeque, 1979). A chunk's part depends on its rows alone, so parts
  summed in other processes and `merge`d give the same bits as one
  process (beam_prepare.py), whatever the order they arrive in.
  """

  def __init__(self, names: tuple[str, ...]):
    self.names = names
    self.parts = {}  # key -> (count, shift [d], mean [d], m2 [d])

  def update(self, x: np.ndarray, key=None) -> None:
    """Takes a chunk [n, len(names)]; `key` orders it among the chunks
    (default: after those taken so far)."""
    n = x.shape[0]
    if not n:
      return
    key = len(self.parts) if key is None else key
    if key in self.parts:
      raise ValueError(f'Moments: chunk key {key!r} taken twice')
    shift = x[0].copy()
    x = x - shift
    mean = x.mean(axis=0)
    self.parts[key] = (n, shift, mean, ((x - mean) ** 2).sum(axis=0))

  def merge(self, other: 'Moments') -> None:
    """Takes the chunks of `other` (keys distinct from these)."""
    for key, part in other.parts.items():
      if key in self.parts:
        raise ValueError(f'Moments: chunk key {key!r} taken twice')
      self.parts[key] = part

  def finish(self) -> dict[str, dict[str, float]]:
    """{column: {'mean', 'std'}}; a constant column gets std 1."""
    shift = np.zeros(len(self.names))
    count, mean, m2 = 0, np.zeros(len(self.names)), np.zeros(len(self.names))
    for k, key in enumerate(sorted(self.parts)):
      n, s, m, q = self.parts[key]
      if k == 0:
        shift = s
      m = m + (s - shift)  # The chunk's mean, shifted as the first's.
      total = count + n
      delta = m - mean
      mean = mean + delta * (n / total)
      m2 = m2 + q + delta**2 * (count * n / total)
      count = total
    std = np.sqrt(m2 / max(count, 1))
    return {
      name: {'mean': float(s + m), 'std': float(d) if d > 0 else 1.0}
      for name, s, m, d in zip(self.names, shift, mean, std, strict=True)
    }


def fixed_blocks(
  chunks: Iterator[dict[str, np.ndarray]], rows: int
) -> Iterator[dict[str, np.ndarray]]:
  """Regroups chunks of any sizes into blocks of exactly `rows` rows."""
  pending, held = [], 0
  for chunk in chunks:
    pending.append(chunk)
    held += len(chunk['row'])
    while held >= rows:
      merged = {k: np.concatenate([c[k] for c in pending]) for k in chunk}
      yield {k: a[:rows] for k, a in merged.items()}
      pending = [{k: a[rows:] for k, a in merged.items()}]
      held -= rows
  if held:
    yield {k: np.concatenate([c[k] for c in pending]) for k in pending[0]}
