"""Ali-CCP as a two-task `Dataset`: click (CTR) and purchase (CVR or CTCVR).

Source: Ma et al., "Entire Space Multi-Task Model: An Effective Approach for
Estimating Post-Click Conversion Rate", SIGIR 2018; files in torch-rechub's
preprocessed layout (ali_ccp_builder.py). Splits are the files' own
train / val / test.

Tasks (both binary), by `conversion_space`:
  'click' (default): click on every impression (mask 1), and purchase on the
    clicked impressions only (mask = click). This is the CVR sample space:
    a conversion is only defined after a click, as in the ESMM paper.
  'impression': click as above, and the purchase task becomes click AND
    purchase on every impression (mask 1): the CTCVR task of ESMM.

A multi-host run passes `process_index` / `process_count`: each process gets
its contiguous share of the training rows and reads only the prepared
records that hold it; validation and test are whole on every process. The
label-leakage guard (leakage.py) runs on the training rows returned.

TFDS prepares and caches the encoded data under `data_dir` (default:
$TFDS_DATA_DIR, else ~/tensorflow_datasets) from the raw files in
`manual_dir` (default: $MTL_DATA_DIR/ali-ccp-sample for variant 'sample',
$MTL_DATA_DIR/ali-ccp for 'full'); later loads only read the cache.
"""

import os

import numpy as np

from mtl.core.tasks import Task
from mtl.data import ali_ccp_builder as acb
from mtl.data import csv_builder as cb
from mtl.data import prepared
from mtl.data.dataset import Dataset
from mtl.data.leakage import check_no_label_leakage
from mtl.errors import ConfigError

DataError = cb.DataError
RawFilesMissingError = cb.RawFilesMissingError

CONVERSION_SPACES = ('click', 'impression')
VARIANTS = ('sample', 'full')
FOLDERS = {'sample': 'ali-ccp-sample', 'full': 'ali-ccp'}
TASKS = ('click', 'purchase')


def how_to_get(variant: str) -> str:
  """Where the raw files come from, for error messages."""
  if variant == 'sample':
    return prepared.sample_sources(
      acb.AliCcp.url_infos, acb.SOURCE, acb.FILES['sample'].values()
    )
  return (
    'get Tianchi dataset 408 (https://tianchi.aliyun.com/dataset/408, '
    "Alibaba's research-use terms) preprocessed into torch-rechub's CSV "
    f'layout as {", ".join(acb.FILES["full"].values())} (see torch-rechub '
    'examples/ranking/data/ali-ccp; the header is '
    f'{",".join(acb.COLUMNS[:4])},...,{acb.COLUMNS[-1]})'
  )


def conversion_labels(
  click: np.ndarray, conversion: np.ndarray, conversion_space: str
) -> tuple[np.ndarray, np.ndarray]:
  """labels, mask [2, N] float32 of (click, conversion) in a sample space."""
  click = click.astype(np.float32)
  conversion = conversion.astype(np.float32)
  ones = np.ones_like(click)
  if conversion_space == 'click':
    return np.stack([click, conversion]), np.stack([ones, click])
  return np.stack([click, click * conversion]), np.stack([ones, ones])


def check_choice(name: str, key: str, value, choices) -> None:
  """Raises a one-line ConfigError if `value` is not one of `choices`."""
  if value not in choices:
    raise ConfigError(
      f'{name}: unknown {key} {value!r}, expected one of {tuple(choices)}'
    )


def load_ali_ccp(
  *,
  conversion_space: str = 'click',
  variant: str = 'sample',
  manual_dir: str | os.PathLike | None = None,
  data_dir: str | os.PathLike | None = None,
  chunksize: int = cb.DEFAULT_CHUNKSIZE,
  process_index: int = 0,
  process_count: int = 1,
) -> Dataset:
  """Loads Ali-CCP as train / validation / test splits.

  Args:
    conversion_space: 'click' (purchase masked to clicks: CVR) or
      'impression' (purchase = click AND purchase everywhere: CTCVR).
    variant: 'sample' (torch-rechub's 100/50/50-row sample, checksummed) or
      'full' (ali_ccp_{train,val,test}.csv of the same layout).
    manual_dir: folder holding the raw CSV files; default
      $MTL_DATA_DIR/ali-ccp-sample ('sample') or $MTL_DATA_DIR/ali-ccp
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
  check_choice(
    'ali_ccp', 'conversion_space', conversion_space, CONVERSION_SPACES
  )
  check_choice('ali_ccp', 'variant', variant, VARIANTS)

  def make_builder():
    return acb.AliCcp(
      config=variant,
      data_dir=data_dir,
      file_format='array_record',
      chunksize=chunksize,
    )

  def read(builder) -> Dataset:
    raw, share = prepared.read_splits(builder, process_index, process_count)
    return funnel_dataset(
      'ali_ccp',
      builder,
      raw,
      tasks=TASKS,
      dense=acb.DENSE,
      sparse=acb.SPARSE,
      conversion_space=conversion_space,
      stats={'variant': variant, 'share': share},
    )

  return prepared.load(
    make_builder,
    read,
    name='ali_ccp',
    given_dir=manual_dir,
    folder=FOLDERS[variant],
    files=tuple(acb.FILES[variant].values()),
    how_to_get=how_to_get(variant),
    process_index=process_index,
  )


def funnel_dataset(
  name, builder, raw, *, tasks, dense, sparse, conversion_space, stats
) -> Dataset:
  """A click/conversion Dataset from a prepared builder's raw splits.

  Shared by ali_ccp and aliexpress: labels and masks in the chosen sample
  space, the label-leakage guard on the training split, vocabulary sizes
  (+1: the out-of-vocabulary id) and the stats every loader reports.
  """
  splits = {}
  for split, a in raw.items():
    labels, mask = conversion_labels(a[tasks[0]], a[tasks[1]], conversion_space)
    splits[split] = {
      'dense': a['dense'],
      'sparse': a['sparse'],
      'labels': labels,
      'mask': mask,
    }
  check_no_label_leakage(
    **splits['train'],
    feature_names=dense + sparse,
    task_names=tasks,
    where=f'{name} train',
  )
  encoding = builder.info.metadata
  vocab_sizes = tuple(len(encoding['vocabularies'][n]) + 1 for n in sparse)
  stats = {
    **stats,
    'conversion_space': conversion_space,
    'prepared_dir': str(builder.data_path),
    'rows': {s: int(a['labels'].shape[1]) for s, a in splits.items()},
    'positive_rate': {s: positive_rates(a, tasks) for s, a in splits.items()},
    'vocab_sizes': dict(zip(sparse, vocab_sizes, strict=True)),
    'dense_normalisers': {n: dict(encoding['dense'][n]) for n in dense},
  }
  return Dataset(
    name=name,
    tasks=tuple(Task(t, 'binary') for t in tasks),
    dense_names=dense,
    sparse_names=sparse,
    vocab_sizes=vocab_sizes,
    splits=splits,
    stats=stats,
  )


def positive_rates(arrays: dict, tasks) -> dict[str, float]:
  """Each task's mean label over the rows its mask counts (None if none)."""
  rates = {}
  for t, task in enumerate(tasks):
    counted = arrays['mask'][t] > 0
    labels = arrays['labels'][t][counted]
    rates[task] = float(labels.mean()) if labels.size else None
  return rates
