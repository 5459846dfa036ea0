"""Reading a prepared TFDS builder's records back, per process.

`is_prepared` asks TFDS quietly; `read_splits` reads the splits back, only
the training rows [start, stop) of one process's share (`process_share`),
checking every record (`check_record`, `read_rows`).
"""

import logging

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging

from mtl.data.csv_builder import DataError
from mtl.errors import ConfigError


class _NotYetPrepared(logging.Filter):
  """Drops TFDS's warning that a cache folder has no dataset_info.json."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (
      message.startswith('Variant folder ')
      and message.endswith(' has no dataset_info.json')
    )


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """`builder.is_prepared()`, without TFDS's warning when it is not.

  The builder makes its (empty) cache folder when constructed, and TFDS
  warns that it holds no dataset_info.json: on a first run, that is no news.
  """
  quiet = _NotYetPrepared()
  absl_logging.get_absl_logger().addFilter(quiet)
  try:
    return builder.is_prepared()
  finally:
    absl_logging.get_absl_logger().removeFilter(quiet)


def forget_builders() -> None:
  """Lets go of every TFDS builder made so far, and its DatasetInfo.

  TFDS caches `DatasetBuilder.info` in an unbounded functools.lru_cache
  keyed by the builder, so every builder a process ever made stays alive
  with its metadata: for a table, its vocabularies (at 50M scale rows, 2M
  ids: 124 MB of Python strings, 120 MB of RSS). Called once a dataset is
  read (build.load_dataset): a builder used again later reads its info
  back from its prepared directory.
  """
  cached = tfds.core.DatasetBuilder.info.fget
  while not hasattr(cached, 'cache_clear'):  # Under TFDS's logging wrapper.
    cached = cached.__wrapped__
  cached.cache_clear()


def process_share(
  num_rows: int, process_index: int, process_count: int
) -> tuple[int, int]:
  """[start, stop): process `process_index`'s contiguous share of the rows.

  Shares differ by at most one row, and concatenated in process order they
  are all the rows, in order.

  Raises:
    ConfigError: a process_index or process_count keyword out of range.
  """
  if not (
    isinstance(process_count, int)
    and not isinstance(process_count, bool)
    and process_count >= 1
  ):
    raise ConfigError(
      f'process_count is {process_count!r}, expected a positive int'
    )
  if not (
    isinstance(process_index, int)
    and not isinstance(process_index, bool)
    and 0 <= process_index < process_count
  ):
    raise ConfigError(
      f'process_index is {process_index!r}, expected an int in '
      f'[0, {process_count})'
    )
  if process_count > num_rows:
    raise ConfigError(
      f'process_count {process_count} exceeds the {num_rows} training rows'
    )
  start = num_rows * process_index // process_count
  return start, num_rows * (process_index + 1) // process_count


def num_rows(builder: tfds.core.DatasetBuilder, split: str) -> int:
  """Rows of a prepared split: full records and the last, shorter one."""
  records = builder.info.splits[split].num_examples
  if not records:
    return 0
  last = builder.as_data_source(split=split)[records - 1]
  check_record(builder, split, records - 1, last)
  return (records - 1) * builder.info.metadata['block_rows'] + len(last['row'])


def check_record(builder, split: str, k: int, record) -> None:
  """Raises a DataError unless record `k` read back whole: TFDS gives a
  record of a truncated array_record file as a dict of None."""
  where = (
    f'{builder.name}: prepared record {k} of split {split!r} in '
    f'{builder.data_path}'
  )
  keys = set(builder.info.features.keys())
  if not isinstance(record, dict) or set(record) != keys:
    raise DataError(
      f'{where} is {type(record).__name__}, expected the features '
      f'{", ".join(sorted(keys))}'
    )
  empty = sorted(key for key, a in record.items() if a is None)
  if empty:
    raise DataError(
      f'{where} has no data for {", ".join(empty)} (its file is truncated '
      'or damaged)'
    )
  lengths = {len(a) for a in record.values()}
  if len(lengths) != 1:
    raise DataError(f'{where} has features of different lengths {lengths}')


def read_rows(
  builder: tfds.core.DatasetBuilder,
  split: str,
  start: int = 0,
  stop: int | None = None,
) -> dict[str, np.ndarray]:
  """Rows [start, stop) of a prepared split, reading only their records.

  Raises:
    DataError: the cache does not hold the rows in order (a record of the
      wrong size, or raw row numbers that do not increase).
  """
  block = builder.info.metadata['block_rows']
  total = num_rows(builder, split)
  stop = total if stop is None else stop
  source = builder.as_data_source(split=split)
  first, last = start // block, -(-stop // block)
  records = [source[k] for k in range(first, last)]
  for k, record in zip(range(first, last), records, strict=True):
    check_record(builder, split, k, record)
    want = min(block, total - k * block)
    if len(record['row']) != want:
      raise DataError(
        f'{builder.name}: prepared record {k} of split {split!r} in '
        f'{builder.data_path} has {len(record["row"])} rows, expected {want}'
      )
  if not records:
    raise DataError(f'{builder.name}: split {split!r} has no rows')
  offset = first * block
  arrays = {
    key: np.concatenate([r[key] for r in records])[
      start - offset : stop - offset
    ]
    for key in records[0]
  }
  if (np.diff(arrays['row']) <= 0).any():
    raise DataError(
      f'{builder.name}: prepared split {split!r} in {builder.data_path} is '
      'not in raw-file order; delete it to prepare it again'
    )
  return arrays


def read_splits(
  builder: tfds.core.DatasetBuilder,
  process_index: int,
  process_count: int,
  eval_rows: int | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
  """This process's share of 'train' and the whole of the other splits.

  eval_rows: read only the first rows of the other splits (streamed
    evaluation reads them from disk: a sample for shapes).

  Returns:
    ({split: {feature: array}}, a description of the share for the stats).
  """
  total = num_rows(builder, 'train')
  start, stop = process_share(total, process_index, process_count)
  arrays = {'train': read_rows(builder, 'train', start, stop)}
  for split in ('validation', 'test'):
    n = num_rows(builder, split)
    arrays[split] = read_rows(builder, split, 0, min(n, eval_rows or n))
  share = {
    'process_index': process_index,
    'process_count': process_count,
    'train_rows': [start, stop],
    'train_rows_all_processes': total,
  }
  return arrays, share
