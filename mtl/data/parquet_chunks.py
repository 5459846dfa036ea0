"""Parquet files read in chunks (table_files.Source.chunks): record
batches cut where a whole read cuts them, list columns as lists of
strings, the number columns a caller reads only as numbers kept as Arrow
numbers (table_files' module docstring says when that is exact), every
other column as pandas' string dtype over the Arrow strings (no copy).
"""

import pandas as pd


def parquet_chunks(path, chunksize, usecols, numeric, start=0):
  """(first data row, chunk) of a Parquet file (table_files.Source.chunks)."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  # pre_buffer (pyarrow's default) caches every column chunk it has read
  # until the file is closed: 0.33 GB of a 10M-row file's 0.36 GB by its
  # end; read buffered instead, it holds 22 MB and is faster.
  reader = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
  groups, first = [], 0  # The row groups from the one holding `start`.
  for g in range(reader.metadata.num_row_groups):
    rows = reader.metadata.row_group(g).num_rows
    if first + rows > start or groups:
      groups.append(g)
    else:
      first += rows
  batches = reader.iter_batches(
    batch_size=chunksize, columns=list(usecols), row_groups=groups
  )
  if first != start:  # Batches cut at first + k chunksize: cut again.
    batches = recut(batches, chunksize, start - first)
  for batch in batches:
    columns = {}
    for name, array in zip(batch.schema.names, batch.columns, strict=True):
      if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        columns[name] = array.cast(pa.list_(pa.string())).to_pylist()
      elif name in numeric and exact_number(array.type):
        columns[name] = pd.Series(pd.arrays.ArrowExtensionArray(array))
      else:  # pandas' string dtype over the Arrow strings: no copy.
        columns[name] = array.cast(pa.string()).to_pandas()
    yield start, pd.DataFrame(columns)
    start += batch.num_rows


def recut(batches, chunksize: int, skip: int):
  """Record batches from row `skip` of `batches`, cut every `chunksize`
  rows."""
  import pyarrow as pa

  pending = None
  for batch in batches:
    if skip:
      drop = min(skip, batch.num_rows)
      batch, skip = batch.slice(drop), skip - drop
    table = pa.Table.from_batches([batch])
    pending = table if pending is None else pa.concat_tables([pending, table])
    while pending.num_rows >= chunksize:
      yield pending.slice(0, chunksize).combine_chunks().to_batches()[0]
      pending = pending.slice(chunksize)
  if pending is not None and pending.num_rows:
    yield pending.combine_chunks().to_batches()[0]


def exact_number(t) -> bool:
  """Whether numbers of Arrow type `t` convert to the float64 that their
  text parses to (table_files' module docstring)."""
  import pyarrow as pa

  return pa.types.is_integer(t) or pa.types.is_float64(t)


def arrow_numbers(raw):
  """The Arrow array of an Arrow number column (Source.chunks' `numeric`),
  else None."""
  import pyarrow as pa

  dtype = getattr(raw, 'dtype', None)
  if isinstance(dtype, pd.ArrowDtype) and exact_number(dtype.pyarrow_dtype):
    return pa.array(raw)
  return None
