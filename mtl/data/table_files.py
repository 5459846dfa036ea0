"""How a table's files are read: formats, sources, side tables, values.

A `Source` is one CSV/TSV (optionally gzipped) or Parquet file read in
chunks of its columns, every value a string (pandas for text, pyarrow record
batches for Parquet): no file is ever whole in memory. A Parquet column the
caller reads only as numbers (`numeric`) stays an Arrow number column when
its type is an integer or float64: `to_float` then gives the float64 that
its text would parse to (a float64's text round-trips; an integer's cast
and parse both round to nearest), and a bad value is named by that text
(`found`), so the result and the errors are those of the text, without
formatting and parsing every number (a third of the scale table's reading).
A float32 column stays text: its shortest text parses to another float64
than the widened float32 (parquet_chunks.py reads Parquet; side_tables.py
joins side tables).
`numbers`, `texts` and `cell_values` read a chunk's column as numbers, as
text, or through a feature's `extract`; `check_sha256` checks a file
against its registered sum. A header that names a column twice, or a .gz
file that cannot be decompressed, is a DataError naming the file. A bad
value is one DataError line naming the file, its 1-based data row (the
header not counted), the column, what was found and what was expected.
"""

import csv
import dataclasses
import gzip
import hashlib
import pathlib
import re
from collections.abc import Iterator

import numpy as np
import pandas as pd

from mtl.data import csv_builder as cb
from mtl.data.parquet_chunks import arrow_numbers, parquet_chunks
from mtl.errors import DataError

FORMATS = ('auto', 'csv', 'tsv', 'parquet')


def file_format(path, fmt: str) -> str:
  """'csv', 'tsv' or 'parquet': `fmt`, or from the name ('auto')."""
  if fmt != 'auto':
    return fmt
  name = pathlib.Path(path).name.lower().removesuffix('.gz')
  for suffix, found in (('.csv', 'csv'), ('.tsv', 'tsv'), ('.parquet', 'pq')):
    if name.endswith(suffix):
      return 'parquet' if found == 'pq' else found
  raise DataError(
    f'{path}: cannot tell its format from its name, expected a .csv, .tsv '
    "(optionally .gz) or .parquet file, or the dataset keyword format='csv'"
    "|'tsv'|'parquet'"
  )


@dataclasses.dataclass(frozen=True)
class Source:
  """How to read one file."""

  path: str
  fmt: str  # csv, tsv or parquet
  delimiter: str | None
  column_names: tuple[str, ...]
  encoding: str = 'utf-8'

  @property
  def sep(self) -> str:
    return self.delimiter or {'csv': ',', 'tsv': '\t'}.get(self.fmt, ',')

  def columns(self, distinct: bool = True) -> list[str]:
    """The file's column names (its header, or column_names); a header
    naming one twice is a DataError unless not `distinct` (a first line
    read to tell whether it is a header at all)."""
    if self.fmt == 'parquet':
      import pyarrow.parquet as pq

      try:
        return list(pq.ParquetFile(self.path).schema_arrow.names)
      except Exception as e:  # noqa: BLE001 -- any unreadable file.
        raise DataError(f'{self.path}: is not a Parquet file ({e})') from e
    if self.column_names:
      return list(self.column_names)
    try:
      names = list(
        pd.read_csv(
          self.path, sep=self.sep, nrows=0, encoding=self.encoding
        ).columns
      )
    except pd.errors.EmptyDataError as e:
      raise DataError(f'{self.path}: is empty, expected a header') from e
    except cb.GZIP_ERRORS as e:
      raise cb.not_gzip(self.path, e) from e
    except UnicodeDecodeError as e:
      raise cb.not_utf8(self.path, sep=self.sep) from e
    if distinct:
      _check_distinct(self.path, self._header_fields())
    return names

  def _header_fields(self) -> list[str]:
    """The header line's fields as written (pandas renames a repeated
    name 'x' to 'x.1'); [] where the csv module cannot read it."""
    if len(self.sep) != 1:
      return []
    opener = gzip.open if str(self.path).endswith('.gz') else open
    try:
      with opener(
        self.path, 'rt', encoding=self.encoding, errors='replace', newline=''
      ) as f:
        return next(csv.reader(f, delimiter=self.sep), [])
    except csv.Error:
      return []

  def chunks(
    self,
    chunksize: int,
    usecols,
    numeric=frozenset(),
    start: int = 0,
    stop: int | None = None,
  ) -> Iterator[tuple[int, pd.DataFrame]]:
    """(first data row, chunk) of the columns `usecols`, every value a
    string (None/NaN: missing) or, from Parquet, a list of strings, or an
    Arrow number column for those of `numeric` (module docstring).

    The chunks cover data rows [start, stop) (stop None: to the end), cut
    at multiples of `chunksize` (`start` is one), so a reader of part of
    a file (beam_prepare.py) gets the very chunks a whole read has there.
    """
    if start % chunksize:
      raise ValueError(f'start {start} is not a multiple of {chunksize}')
    if self.fmt == 'parquet':
      chunks = parquet_chunks(self.path, chunksize, usecols, numeric, start)
    else:
      chunks = self._text_chunks(chunksize, usecols, start)
    for first, chunk in chunks:
      if stop is not None and first + len(chunk) > stop:
        chunk = chunk.iloc[: max(stop - first, 0)]
      if len(chunk):
        yield first, chunk
      if stop is not None and first + len(chunk) >= stop:
        return

  def _text_chunks(self, chunksize, usecols, start):
    header = None if self.column_names else 'infer'
    names = list(self.column_names) or None
    # The tokenizer skips the rows before `start` (quoted line breaks
    # and all) without building them.
    skip = range(header is not None, start + (header is not None))
    # Every column is parsed: with usecols pandas drops a row's extra
    # fields silently, where a whole read names the row.
    for first, chunk in cb.read_chunks(
      pathlib.Path(self.path),
      chunksize=chunksize,
      sep=self.sep,
      header=header,
      names=names,
      encoding=self.encoding,
      **({'skiprows': skip} if start else {}),
    ):
      yield start + first, chunk[list(usecols)]


def found(raw: pd.Series, i: int) -> str:
  """repr of cell i's text, as an error names a bad value: an Arrow number
  column's cell by the text a Parquet cell is read as."""
  import pyarrow as pa

  array = arrow_numbers(raw)
  if array is None:
    return repr(raw.iloc[i])
  return repr(array[i : i + 1].cast(pa.string())[0].as_py())


def _check_distinct(path, header: list[str]) -> None:
  """A header naming a column twice is a DataError (pandas would read the
  second as '<name>.1', and the schema the first, silently)."""
  for i, name in enumerate(header):
    if name in header[:i]:
      raise DataError(
        f'{path}: the header names column {name!r} twice (columns '
        f'{header.index(name) + 1} and {i + 1}), expected distinct names'
      )


def to_float(raw: pd.Series) -> np.ndarray:
  """float64 [n] of text cells, NaN where missing or not a number (as
  pd.to_numeric(errors='coerce')). Arrow's cast parses a column of numbers
  ~10x faster; a column it rejects (a cell that is not a number) goes to
  pandas, whose NaN the caller names as a bad value."""
  import pyarrow as pa
  import pyarrow.compute as pc

  array = arrow_numbers(raw)
  if array is not None:  # The float64 of the text (module docstring).
    cast = pc.cast(array, pa.float64(), safe=False)
    return cast.to_numpy(zero_copy_only=False)
  try:
    array = pa.array(raw, from_pandas=True)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
      return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
  except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
    pass
  return pd.to_numeric(raw, errors='coerce').to_numpy(np.float64)


def numbers(chunk, column: str, offsets, path, missing: str = 'error'):
  """float64 values of a column whose rows are the file's 0-based data rows
  `offsets`; an empty field is NaN unless `missing` is 'error'.

  Raises:
    DataError: a value that is not a finite number (or empty when missing
      is 'error'), named by file, 1-based row and column.
  """
  raw = chunk[column]
  values = to_float(raw)
  empty = pd.isna(raw).to_numpy()
  bad = ~np.isfinite(values) & ~(empty & (missing != 'error'))
  if bad.any():
    i = int(np.argmax(bad))
    text = 'empty' if empty[i] else found(raw, i)
    hint = (
      " (set the feature's missing to 'mean' or 'zero')"
      if empty[i] and missing == 'error'
      else ''
    )
    raise DataError(
      f'{path}: row {offsets[i] + 1} column {column!r} is {text}, '
      f'expected a finite number{hint}'
    )
  return values


def cell_values(f, chunk) -> pd.Series:
  """A dense or categorical feature's cells of a chunk: with `extract`, its
  regular expression's first group (NaN where it does not match)."""
  raw = chunk[f.column]
  if not f.extract:
    return raw
  search = re.compile(f.extract).search

  def first_group(cell):
    found = None if pd.isna(cell) else search(str(cell))
    return found[1] if found else np.nan

  return raw.map(first_group)


def texts(chunk, column: str, offsets, path) -> np.ndarray:
  """object [n] of a column's text; missing is a DataError."""
  raw = chunk[column]
  missing = pd.isna(raw).to_numpy()
  if missing.any():
    i = int(np.argmax(missing))
    raise DataError(
      f'{path}: row {offsets[i] + 1} column {column!r} is empty, expected a '
      'value'
    )
  return raw.astype(str).to_numpy(object)


def check_sha256(name: str, path, expected: str) -> None:
  """Raises a DataError unless the file's sha256 is `expected`."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  if digest.hexdigest() != expected.lower():
    raise DataError(
      f'{name}: {path} has sha256 {digest.hexdigest()}, expected '
      f'{expected.lower()} (the registered file: a damaged or other copy)'
    )
