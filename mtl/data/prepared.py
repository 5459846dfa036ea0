"""Preparing a CSV-based TFDS builder, and reading its records back per process.

The loaders ali_ccp.py and aliexpress.py share these steps (movielens.py,
a `table` instance, uses `manual_dir`):
find the raw files (`manual_dir` keyword, else $MTL_DATA_DIR/<folder>), fail
with one line naming every missing file and how to get it, let TFDS prepare
the cache (checksums checked against the builder's registered .tsv), and read
a split back, optionally only the rows [start, stop) of one process's share.
`load` does it all through cache.load: a cache that cannot be used is
prepared again from the raw files, or named for deletion.
"""

import logging
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging

# TFDS raises this type on a checksum mismatch but does not export it.
from tensorflow_datasets.core.download.download_manager import (
  NonMatchingChecksumError,
)

from mtl.data import cache
from mtl.data.csv_builder import DataError, RawFilesMissingError
from mtl.errors import ConfigError


def manual_dir(
  name: str, given: str | os.PathLike | None, folder: str, how_to_get: str
) -> pathlib.Path:
  """`given`, else $MTL_DATA_DIR/folder; raises if neither is set."""
  if given is not None:
    return pathlib.Path(given).expanduser()
  root = os.environ.get('MTL_DATA_DIR')
  if not root:
    raise RawFilesMissingError(
      f'{name}: the data is not prepared yet and neither manual_dir nor '
      f'$MTL_DATA_DIR is set; {how_to_get}, and pass the folder as '
      f'manual_dir (or put it at $MTL_DATA_DIR/{folder})'
    )
  return pathlib.Path(root) / folder


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


def prepare(
  builder: tfds.core.GeneratorBasedBuilder,
  *,
  name: str,
  given_dir: str | os.PathLike | None,
  folder: str,
  files: tuple[str, ...],
  how_to_get: str,
) -> tfds.core.GeneratorBasedBuilder:
  """Prepares `builder` from the raw `files` unless it is cached.

  Args:
    builder: the TFDS builder (its data_dir holds the cache).
    name: the dataset's name, for messages.
    given_dir: the manual_dir keyword; default $MTL_DATA_DIR/folder. Only
      read when the data is not prepared yet.
    folder: the raw files' folder under $MTL_DATA_DIR.
    files: the raw file names the builder reads.
    how_to_get: where to get the files, for the message when one is missing.

  Raises:
    RawFilesMissingError: a file is missing (named with its expected path).
    DataError: a file is not the registered one (checksum), or malformed.
  """
  if is_prepared(builder):
    return builder
  manual = manual_dir(name, given_dir, folder, how_to_get)
  missing = [str(manual / f) for f in files if not (manual / f).is_file()]
  # Checked here so that TFDS never falls back to a download attempt.
  if missing:
    raise RawFilesMissingError(
      f'{name}: raw file(s) not found: {", ".join(missing)}; {how_to_get} '
      f'into {manual}, or pass manual_dir= (or set $MTL_DATA_DIR to a folder '
      f'holding {folder}/)'
    )
  config = tfds.download.DownloadConfig(
    manual_dir=manual,
    force_checksums_validation=True,
    try_download_gcs=False,
  )
  try:
    builder.download_and_prepare(download_config=config)
  except NonMatchingChecksumError as err:
    raise DataError(
      f'{name}: a raw file in {manual} is not the registered file: '
      f'{" ".join(str(err).split())}'
    ) from err
  return builder


def missing_raw(
  given: str | os.PathLike | None, folder: str, files: tuple[str, ...]
) -> list[str]:
  """The raw files that are not there ([] if all are), without raising."""
  if given is None and not os.environ.get('MTL_DATA_DIR'):
    return ['neither manual_dir nor $MTL_DATA_DIR is set']
  manual = (
    pathlib.Path(given).expanduser()
    if given is not None
    else pathlib.Path(os.environ['MTL_DATA_DIR']) / folder
  )
  return [str(manual / f) for f in files if not (manual / f).is_file()]


def load(
  make_builder,
  read,
  *,
  name: str,
  given_dir: str | os.PathLike | None,
  folder: str,
  files: tuple[str, ...],
  how_to_get: str,
  process_index: int = 0,
):
  """`read(builder)` of the prepared data, prepared (again) if needed.

  See cache.load: a cache that cannot be read or fails `read`'s checks is
  prepared again from the raw files when they are there (on process 0), or
  named for deletion.
  """

  def prepare_it(builder):
    prepare(
      builder,
      name=name,
      given_dir=given_dir,
      folder=folder,
      files=files,
      how_to_get=how_to_get,
    )

  return cache.load(
    make_builder,
    prepare_it,
    read,
    name=name,
    raw_missing=lambda: missing_raw(given_dir, folder, files),
    rebuild=process_index == 0,
  )


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


def num_rows(builder: tfds.core.GeneratorBasedBuilder, split: str) -> int:
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
  builder: tfds.core.GeneratorBasedBuilder,
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
  builder: tfds.core.GeneratorBasedBuilder,
  process_index: int,
  process_count: int,
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
  """This process's share of 'train' and the whole of the other splits.

  Returns:
    ({split: {feature: array}}, a description of the share for the stats).
  """
  total = num_rows(builder, 'train')
  start, stop = process_share(total, process_index, process_count)
  arrays = {'train': read_rows(builder, 'train', start, stop)}
  for split in ('validation', 'test'):
    arrays[split] = read_rows(builder, split)
  share = {
    'process_index': process_index,
    'process_count': process_count,
    'train_rows': [start, stop],
    'train_rows_all_processes': total,
  }
  return arrays, share


def sample_sources(url_infos, source: str, names) -> str:
  """How to get the torch-rechub sample files, sizes and sums included."""
  files = ', '.join(
    f'{source}{n} ({int(url_infos[source + n].size):,} bytes, '
    f'sha256 {url_infos[source + n].checksum})'
    for n in names
  )
  return (
    f'download the torch-rechub samples {files} (the full data is '
    "variant='full')"
  )
