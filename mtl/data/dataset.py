"""The in-memory form every dataset loader returns.

A split is a dict of numpy arrays in the batch layout (ARCHITECTURE.md §3):

  dense  [N, F] float32   normalised numeric features
  sparse [N, S] int32     categorical ids, column s in [0, vocab_sizes[s])
  labels [T, N] float32   task t's label of row n
  mask   [T, N] float32   1 where row n counts for task t (sample spaces)
"""

import dataclasses

import numpy as np

from mtl.core.tasks import Task
from mtl.errors import DataError

SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A preprocessed multi-task dataset, every split held as numpy arrays."""

  name: str
  tasks: tuple[Task, ...]
  dense_names: tuple[str, ...]
  sparse_names: tuple[str, ...]
  vocab_sizes: tuple[int, ...]
  splits: dict[str, dict[str, np.ndarray]]
  stats: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for split, arrays in self.splits.items():
      check_split(self, split, arrays)

  @property
  def num_tasks(self) -> int:
    return len(self.tasks)

  def num_rows(self, split: str) -> int:
    return int(self.splits[split]['labels'].shape[1])


def check_split(ds: Dataset, split: str, a: dict[str, np.ndarray]) -> None:
  """Raises a one-line DataError if a split breaks the batch layout."""
  where = f'dataset {ds.name!r} split {split!r}'
  n = a['labels'].shape[1] if a['labels'].ndim == 2 else -1
  want = {
    'dense': ((n, len(ds.dense_names)), np.float32),
    'sparse': ((n, len(ds.sparse_names)), np.int32),
    'labels': ((len(ds.tasks), n), np.float32),
    'mask': ((len(ds.tasks), n), np.float32),
  }
  for key, (shape, dtype) in want.items():
    if key not in a:
      raise DataError(f'{where}: missing array {key!r}')
    if a[key].shape != shape or a[key].dtype != dtype:
      raise DataError(
        f'{where}: {key} is {a[key].dtype}{list(a[key].shape)}, '
        f'expected {np.dtype(dtype)}{list(shape)}'
      )
  if len(ds.vocab_sizes) != len(ds.sparse_names):
    raise DataError(
      f'{where}: {len(ds.vocab_sizes)} vocab sizes for '
      f'{len(ds.sparse_names)} sparse features'
    )
  if a['sparse'].size:
    bad = (a['sparse'] < 0) | (a['sparse'] >= np.asarray(ds.vocab_sizes))
    if bad.any():
      row, col = np.argwhere(bad)[0]
      raise DataError(
        f'{where}: sparse feature {ds.sparse_names[col]!r} row {row} has id '
        f'{a["sparse"][row, col]}, expected [0, {ds.vocab_sizes[col]})'
      )
  if not np.isfinite(a['dense']).all():
    row, col = np.argwhere(~np.isfinite(a['dense']))[0]
    raise DataError(
      f'{where}: dense feature {ds.dense_names[col]!r} row {row} is '
      f'{a["dense"][row, col]}, expected a finite number'
    )
  for t, task in enumerate(ds.tasks):
    y = a['labels'][t][a['mask'][t] > 0]
    if task.kind != 'binary':
      continue
    if not np.isin(y, (0.0, 1.0)).all():
      bad_value = y[~np.isin(y, (0.0, 1.0))][0]
      raise DataError(
        f'{where}: task {task.name!r} is binary but has label {bad_value}, '
        'expected 0 or 1'
      )
    # A process's share of the training rows (a multi-host loader's) may
    # lack a rare class that the whole split has: the split is judged whole.
    partial = (
      split == 'train' and ds.stats.get('share', {}).get('process_count', 1) > 1
    )
    if y.size and (y.min() == y.max()) and not partial:
      raise DataError(
        f'{where}: task {task.name!r} labels are all {y[0]:g} '
        f'({y.size} rows), expected both classes'
      )
