"""The rows mtl-eval evaluates (shell code): a split of the run's dataset,
checked against the inputs the run trained on (preprocessing.json), or a
file of labelled raw rows encoded as a split by the run's preprocessing;
and each row's user key for the per-user metrics (GAUC, XAUC).
"""

import pathlib

import numpy as np

from mtl.core.architectures import ARCHITECTURES
from mtl.core.tasks import Task
from mtl.data import preprocessing
from mtl.data.dataset import Dataset
from mtl.data.encoding import OOV_ID
from mtl.errors import DataError
from mtl.shell import restore


def check_layout(artefact: dict, dataset) -> None:
  """A DataError unless `dataset` still has the inputs the run trained on."""
  found = (list(dataset.dense_names), list(dataset.sparse_names))
  if found != (artefact['dense_names'], artefact['sparse_names']) or [
    int(v) for v in dataset.vocab_sizes
  ] != [int(v) for v in preprocessing.vocab_sizes(artefact)]:
    raise DataError(
      f'dataset {dataset.name!r} no longer has the inputs the run trained on '
      '(preprocessing.json: columns or vocabulary sizes differ), expected '
      'the same prepared data'
    )


def read_file(run: restore.Run, path: pathlib.Path) -> dict:
  """A labelled file of raw rows encoded as a split (in memory)."""
  enc = preprocessing.Encoder(run.artefact)
  source = enc.source(path)
  enc.check_columns(source.columns(), path, labels=True)
  parts = []
  for start, chunk in source.chunks(65536, source.columns()):
    y, m = enc.labels_of(chunk, start, path)
    parts.append({**enc.features(chunk, start, path), 'labels': y, 'mask': m})
  if not parts:
    raise DataError(f'{path}: has no data rows, expected some')
  split = {
    k: np.concatenate(
      [p[k] for p in parts], axis=1 if k in ('labels', 'mask') else 0
    )
    for k in parts[0]
  }
  if enc.kind != 'table':
    return split
  source_tasks = tuple(Task(t.name, t.kind, t.weight) for t in enc.schema.tasks)
  if [t.name for t in source_tasks] == [t.name for t in run.tasks]:
    return split
  # An entire-space model re-targets the tasks (ESMM: click, ctcvr, ...).
  ds = Dataset(
    name=str(path),
    tasks=source_tasks,
    dense_names=tuple(run.artefact['dense_names']),
    sparse_names=tuple(run.artefact['sparse_names']),
    vocab_sizes=preprocessing.vocab_sizes(run.artefact),
    splits={s: split for s in ('train', 'validation', 'test')},
  )
  adapt = ARCHITECTURES[run.settings.model_name].adapt_dataset
  return adapt(ds).splits['train']


def users_of(run: restore.Run, split: dict):
  """The split's user keys [N] (None without a user column); a table's
  out-of-vocabulary user is a user of its own row."""
  user = preprocessing.user_feature(run.artefact)
  if user is None:
    return None
  users = split['sparse'][:, run.artefact['sparse_names'].index(user)]
  if run.artefact['kind'] == 'table':
    users = np.where(users == OOV_ID, -1 - np.arange(len(users)), users)
  return users
