"""AliExpress as a two-task `Dataset`: click (CTR) and conversion.

Source: Li et al., CIKM 2020 (Tianchi dataset 74690), in MTReclib's CSV
layout (aliexpress_builder.py): 16 categorical and 63 numerical features.

Tasks (both binary), by `conversion_space`, exactly as Ali-CCP (ali_ccp.py):
  'click' (default): click with mask 1, conversion with mask = click (the
    post-click CVR sample space);
  'impression': click with mask 1, click AND conversion with mask 1 (CTCVR).

Splits: the raw data has train and test only, so the validation split is a
seeded, label-stratified fraction (`validation_fraction`, `split_seed`) of
the train file, held out before vocabularies and normalisers are fitted
(see aliexpress_builder.py); test is the test file.

A multi-host run passes `process_index` / `process_count`: each process gets
its contiguous share of the training rows (validation and test whole). The
label-leakage guard (leakage.py) runs on the training rows returned.

TFDS prepares and caches the encoded data under `data_dir` (default:
$TFDS_DATA_DIR, else ~/tensorflow_datasets), one cache per (variant,
validation_fraction, split_seed), from the raw files in `manual_dir`
(default: $MTL_DATA_DIR/aliexpress-sample for variant 'sample',
$MTL_DATA_DIR/aliexpress for 'full').
"""

import os

from mtl.data import aliexpress_builder as aeb
from mtl.data import csv_builder as cb
from mtl.data import prepared
from mtl.data.ali_ccp import check_choice, funnel_dataset
from mtl.data.dataset import Dataset
from mtl.errors import ConfigError

DataError = cb.DataError
RawFilesMissingError = cb.RawFilesMissingError

CONVERSION_SPACES = ('click', 'impression')
VARIANTS = ('sample', 'full')
FOLDERS = {'sample': 'aliexpress-sample', 'full': 'aliexpress'}
TASKS = ('click', 'conversion')


def how_to_get(variant: str) -> str:
  """Where the raw files come from, for error messages."""
  if variant == 'sample':
    return prepared.sample_sources(
      aeb.AliExpress.url_infos, aeb.SOURCE, aeb.FILES['sample'].values()
    )
  return (
    'get Tianchi dataset 74690 (https://tianchi.aliyun.com/dataset/74690, '
    "research use) and put one country's train.csv and test.csv in "
    "MTReclib's layout (its AliExpress_<country>/ folders; header "
    'search_id,categorical_1,...,numerical_63,click,conversion)'
  )


def load_aliexpress(
  *,
  conversion_space: str = 'click',
  variant: str = 'sample',
  validation_fraction: float = 0.1,
  split_seed: int = 0,
  manual_dir: str | os.PathLike | None = None,
  data_dir: str | os.PathLike | None = None,
  chunksize: int = cb.DEFAULT_CHUNKSIZE,
  process_index: int = 0,
  process_count: int = 1,
) -> Dataset:
  """Loads AliExpress as train / validation / test splits.

  Args:
    conversion_space: 'click' (conversion masked to clicks: CVR) or
      'impression' (conversion = click AND conversion everywhere: CTCVR).
    variant: 'sample' (torch-rechub's 100/20-row US sample, checksummed) or
      'full' (one country's train.csv and test.csv).
    validation_fraction: the share of the train file held out as
      validation, in (0, 1); stratified by (click, conversion).
    split_seed: seed of that hold-out.
    manual_dir: folder holding the raw CSV files; default
      $MTL_DATA_DIR/aliexpress-sample ('sample') or $MTL_DATA_DIR/aliexpress
      ('full'). Only read when preparing.
    data_dir: TFDS data directory for the prepared cache; default TFDS's.
    chunksize: rows per pandas read and per prepared record when preparing.
    process_index: this process's index among `process_count`.
    process_count: processes sharing the training rows.

  Returns:
    A Dataset whose stats hold row counts and positive rates per split,
    vocabulary sizes, dense normalisers and this process's share.

  Raises:
    ConfigError: a bad keyword.
    DataError: a malformed raw file, or a feature that leaks
      a label (a RawFilesMissingError, also a FileNotFoundError, if a raw
      file is missing).
  """
  name = 'aliexpress'
  check_choice(name, 'conversion_space', conversion_space, CONVERSION_SPACES)
  check_choice(name, 'variant', variant, VARIANTS)
  if not 0 < validation_fraction < 1:
    raise ConfigError(
      f'{name}: validation_fraction is {validation_fraction!r}, expected a '
      'number in (0, 1)'
    )
  config = aeb.AliExpress.config(
    variant=variant,
    validation_fraction=float(validation_fraction),
    seed=int(split_seed),
  )

  def make_builder():
    return aeb.AliExpress(
      config=config,
      data_dir=data_dir,
      file_format='array_record',
      chunksize=chunksize,
    )

  def read(builder) -> Dataset:
    raw, share = prepared.read_splits(builder, process_index, process_count)
    return funnel_dataset(
      name,
      builder,
      raw,
      tasks=TASKS,
      dense=aeb.DENSE,
      sparse=aeb.SPARSE,
      conversion_space=conversion_space,
      stats={
        'variant': variant,
        'validation_fraction': validation_fraction,
        'split_seed': split_seed,
        'share': share,
      },
    )

  return prepared.load(
    make_builder,
    read,
    name=name,
    given_dir=manual_dir,
    folder=FOLDERS[variant],
    files=tuple(aeb.FILES[variant].values()),
    how_to_get=how_to_get(variant),
    process_index=process_index,
  )
