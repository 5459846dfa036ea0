"""UCI Census-Income (KDD) as a two-task `Dataset`, under a named protocol.

Sources: the UCI Census-Income (KDD) files (see census_income_builder.py);
the set-up of Ma et al., "Modeling Task Relationships in Multi-task Learning
with Multi-gate Mixture-of-Experts", KDD 2018, Sec. 6.3 ('paper'); and
torch-rechub's examples/ranking/data/census-income/preprocess_census.py and
examples/ranking/run_census.py ('library').

Tasks (all binary):
  group 1: income (col 41 == '50000+.'), marital (col 7 == 'Never married');
  group 2: education (col 4 is a college degree, Associates or higher; see
    census_income_builder.COLLEGE_DEGREES), marital.

Protocols (both drop the instance weight, col 24, and split the UCI test file
1:1 at random, seeded by `split_seed`, into validation and test):
  'paper': education and marital status are removed from the inputs
    (7 dense + 31 categorical features).
  'library': like torch-rechub, education stays an input and marital status,
    a label, does not (7 dense + 32 categorical). A column that is a label of
    the chosen task group is never an input, since that would leak the label,
    so with task group 2 'library' equals 'paper'. torch-rechub also fits its
    label encoders and min-max scaler on train+test together and stratifies
    the split by income; here vocabularies and normalisers come from the
    training split only.

TFDS prepares and caches the encoded data (census_income_builder.py) under
`data_dir` (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets) from the raw
files in `manual_dir` (default: $MTL_DATA_DIR/census-income-kdd); later loads
only read the cache.
"""

import functools
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

# TFDS raises this type on a checksum mismatch but does not export it.
from tensorflow_datasets.core.download.download_manager import (
  NonMatchingChecksumError,
)

from mtl.core.tasks import Task
from mtl.data import cache, prepared
from mtl.data import census_income_builder as cib
from mtl.data.dataset import Dataset
from mtl.data.leakage import check_no_label_leakage
from mtl.errors import ConfigError

DataError = cib.DataError
RawFilesMissingError = cib.RawFilesMissingError

PROTOCOLS = ('paper', 'library')
TASK_GROUPS = {1: ('income', 'marital'), 2: ('education', 'marital')}
# The raw column each task's label is read from.
LABEL_COLUMNS = {
  'income': 'income',
  'marital': 'marital_stat',
  'education': 'education',
}
PAPER_REMOVED = ('education', 'marital_stat')


def input_columns(protocol: str, task_group: int) -> tuple[str, ...]:
  """The categorical input columns of a protocol, in raw-file order."""
  removed = {LABEL_COLUMNS[t] for t in TASK_GROUPS[task_group]}
  if protocol == 'paper':
    removed |= set(PAPER_REMOVED)
  return tuple(c for c in cib.CATEGORICAL if c not in removed)


def _how_to_get() -> str:
  infos = cib.CensusIncome.url_infos
  files = ' and '.join(
    f'{url} ({int(infos[url].size):,} bytes, sha256 {infos[url].checksum})'
    for url in cib.URLS.values()
  )
  return f'download {files}'


def _manual_dir(manual_dir: str | os.PathLike | None) -> pathlib.Path:
  if manual_dir is not None:
    return pathlib.Path(manual_dir).expanduser()
  root = os.environ.get('MTL_DATA_DIR')
  if not root:
    raise RawFilesMissingError(
      'census_income: the data is not prepared yet and neither manual_dir '
      f'nor $MTL_DATA_DIR is set; {_how_to_get()} into a folder and pass '
      'it as manual_dir (or put them in $MTL_DATA_DIR/census-income-kdd)'
    )
  return pathlib.Path(root) / 'census-income-kdd'


def _prepare(builder: cib.CensusIncome, manual_dir) -> None:
  """Prepares the cache from the raw files (raises about them)."""
  if prepared.is_prepared(builder):
    return
  manual = _manual_dir(manual_dir)
  missing = _missing(manual)
  # Checked here so that TFDS never falls back to a download attempt.
  if missing:
    raise RawFilesMissingError(
      f'census_income: raw file(s) not found: {", ".join(missing)}; '
      f'{_how_to_get()} into {manual}, or pass manual_dir= (or set '
      '$MTL_DATA_DIR to a folder holding census-income-kdd/)'
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
      f'census_income: a raw file in {manual} is not the registered UCI '
      f'file: {" ".join(str(err).split())}'
    ) from err


def _missing(manual: pathlib.Path) -> list[str]:
  names = [
    cib.CensusIncome.url_infos[url].filename for url in cib.URLS.values()
  ]
  return [str(manual / n) for n in names if not (manual / n).is_file()]


def _raw_missing(manual_dir) -> list[str]:
  """The missing raw files, without raising (cache.load)."""
  if manual_dir is None and not os.environ.get('MTL_DATA_DIR'):
    return ['neither manual_dir nor $MTL_DATA_DIR is set']
  return _missing(_manual_dir(manual_dir))


def _load(read, *, manual_dir, data_dir):
  """`read(builder)` of the prepared cache (cache.load: prepared, or
  prepared again when it cannot be used)."""
  return cache.load(
    lambda: cib.CensusIncome(data_dir=data_dir, file_format='array_record'),
    lambda builder: _prepare(builder, manual_dir),
    read,
    name='census_income',
    raw_missing=lambda: _raw_missing(manual_dir),
  )


def prepare(
  *,
  manual_dir: str | os.PathLike | None = None,
  data_dir: str | os.PathLike | None = None,
) -> cib.CensusIncome:
  """Returns the builder, preparing the data first if it is not cached (or
  again if the cache cannot be read)."""

  def read(builder):
    read_prepared(builder)
    return builder

  return _load(read, manual_dir=manual_dir, data_dir=data_dir)


def read_prepared(builder: cib.CensusIncome) -> dict[str, dict]:
  """The TFDS splits as {split: {feature: array}}, rows in file order.

  Raises:
    DataError: a split is missing, or a record did not read back whole.
  """
  out = {}
  sources = builder.as_data_source()
  if set(sources) != set(cib.URLS):
    raise DataError(
      f'census_income: the prepared data in {builder.data_path} has splits '
      f'{sorted(sources)}, expected {sorted(cib.URLS)}'
    )
  for split, source in sources.items():
    blocks = [source[i] for i in range(len(source))]
    for i, block in enumerate(blocks):
      prepared.check_record(builder, split, i, block)
    if not blocks:
      raise DataError(
        f'census_income: prepared split {split!r} in {builder.data_path} '
        'has no rows'
      )
    arrays = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    order = np.argsort(arrays['row'], kind='stable')
    out[split] = {k: a[order] for k, a in arrays.items()}
  return out


def _select(arrays: dict, rows, sparse_cols, tasks) -> dict[str, np.ndarray]:
  labels = np.stack([arrays[t][rows] for t in tasks]).astype(np.float32)
  return {
    'dense': np.ascontiguousarray(arrays['dense'][rows]),
    'sparse': np.ascontiguousarray(arrays['categorical'][rows][:, sparse_cols]),
    'labels': labels,
    'mask': np.ones_like(labels),
  }


def load_census_income(
  *,
  protocol: str = 'paper',
  task_group: int = 1,
  manual_dir: str | os.PathLike | None = None,
  data_dir: str | os.PathLike | None = None,
  split_seed: int = 0,
) -> Dataset:
  """Loads census-income as train / validation / test splits.

  Args:
    protocol: 'paper' (MMoE KDD'18) or 'library' (torch-rechub's columns).
    task_group: 1 (income, marital) or 2 (education, marital).
    manual_dir: folder holding census-income.{data,test}.gz; default
      $MTL_DATA_DIR/census-income-kdd. Only read when preparing.
    data_dir: TFDS data directory for the prepared cache; default TFDS's.
    split_seed: seed of the random 1:1 validation/test split of the UCI test
      file.

  Returns:
    A Dataset whose stats hold row counts and positive rates per split,
    vocabulary sizes and the dense normalisers.

  Raises:
    ConfigError: an unknown protocol or task group.
    DataError: a bad raw file (a RawFilesMissingError, also a
      FileNotFoundError, if it is missing).
  """
  if protocol not in PROTOCOLS:
    raise ConfigError(
      f'census_income: unknown protocol {protocol!r}, expected one of '
      f'{PROTOCOLS}'
    )
  if task_group not in TASK_GROUPS:
    raise ConfigError(
      f'census_income: unknown task_group {task_group!r}, expected one of '
      f'{tuple(TASK_GROUPS)}'
    )
  return _load(
    functools.partial(
      _dataset, protocol=protocol, task_group=task_group, split_seed=split_seed
    ),
    manual_dir=manual_dir,
    data_dir=data_dir,
  )


def _dataset(builder, *, protocol, task_group, split_seed) -> Dataset:
  """The Dataset of a prepared cache (its checks fail on a bad cache)."""
  tasks = TASK_GROUPS[task_group]
  encoding = builder.info.metadata
  raw = read_prepared(builder)

  n_test = len(raw['test']['row'])
  perm = np.random.default_rng(split_seed).permutation(n_test)
  # {split: (TFDS split, rows of it)}
  rows = {
    'train': ('train', slice(None)),
    'validation': ('test', np.sort(perm[: n_test // 2])),
    'test': ('test', np.sort(perm[n_test // 2 :])),
  }
  sparse_names = input_columns(protocol, task_group)
  sparse_cols = [cib.CATEGORICAL.index(c) for c in sparse_names]
  splits = {
    split: _select(raw[source], r, sparse_cols, tasks)
    for split, (source, r) in rows.items()
  }
  vocab_sizes = tuple(
    len(encoding['vocabularies'][c]) + 1 for c in sparse_names
  )
  # A protocol that kept a label's column as an input would leak it.
  check_no_label_leakage(
    **splits['train'],
    feature_names=tuple(cib.DENSE) + tuple(sparse_names),
    task_names=tasks,
    where='census_income train',
  )
  stats = {
    'protocol': protocol,
    'task_group': task_group,
    'split_seed': split_seed,
    'prepared_dir': str(builder.data_path),
    'rows': {s: int(a['labels'].shape[1]) for s, a in splits.items()},
    'positive_rate': {
      s: {t: float(a['labels'][i].mean()) for i, t in enumerate(tasks)}
      for s, a in splits.items()
    },
    'vocab_sizes': dict(zip(sparse_names, vocab_sizes, strict=True)),
    'dense_normalisers': {n: dict(encoding['dense'][n]) for n in cib.DENSE},
  }
  return Dataset(
    name='census_income',
    tasks=tuple(Task(t, 'binary') for t in tasks),
    dense_names=cib.DENSE,
    sparse_names=sparse_names,
    vocab_sizes=vocab_sizes,
    splits=splits,
    stats=stats,
  )
