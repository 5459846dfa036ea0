"""The preprocessing a run trained with, as a file, and raw rows encoded by it.

The trainer writes `<workdir>/preprocessing.json` when its
dataset has loaded (`artefact`): the model's inputs (dense and sparse column
names, vocabulary sizes with their per-feature layout), its tasks, and what
turns a raw row into those inputs:

  kind 'table'          the feature schema (features, tasks, task_order) and
                        its fitted encoding (vocabularies or hash settings per
                        table, dense and label moments, count features'
                        totals), as the table builder stored them
  kind 'census_income'  protocol, task group and the builder's encoding
                        (training vocabularies, dense log1p and moments)
  kind 'encoded'        no raw form (generated or already-encoded data): a row
                        is its dense values and sparse ids by column name

`Encoder(artefact)` encodes raw rows (a pandas chunk of strings, as
table_files.Source reads them) through the SAME functions the builders use:
each feature kind's `encode` (feature_kinds.encode), table_encode's
`encoded_label`, census_income_builder.encode. A value never seen in training
gets the OOV id (table: 1, census: 0); count features continue the training
log with the given rows (counts.Given). tests/shell/test_after_training.py
checks
that the training file encoded here equals the prepared training split.

Only numpy, pandas and mtl.data are imported: serving (mtl/serving.py) uses
this module without the trainer.
"""

import json
import pathlib

import numpy as np
import pandas as pd

from mtl.core.layers.embedding import Column
from mtl.data import census_income_builder as cib
from mtl.data import (
  derived,
  feature_kinds,
  schema_parse,
  table_encode,
  table_files,
)
from mtl.data import schema as sc
from mtl.data.encoding import Lookups
from mtl.data.feature_kinds import kind_of
from mtl.data.kinds.base import Rows
from mtl.errors import DataError, did_you_mean

FILE = 'preprocessing.json'
FORMAT = 1
KINDS = ('table', 'census_income', 'encoded')
ENCODING = ('tables', 'dense', 'labels', 'counts', 'histories')  # If fitted.


def _column_json(c):
  if isinstance(c, Column):
    return {
      'size': int(c),
      'feature': c.feature,
      'table': c.table,
      'pooling': c.pooling,
      'dim': c.dim,
    }
  return int(c)


def vocab_sizes(artefact: dict) -> tuple:
  """The Dataset's vocab_sizes again (ints, or embedding Columns)."""
  return tuple(
    Column(
      v['size'],
      feature=v['feature'],
      table=v['table'],
      pooling=v['pooling'],
      dim=v['dim'],
    )
    if isinstance(v, dict)
    else int(v)
    for v in artefact['vocab_sizes']
  )


def _metadata(dataset) -> dict | None:
  """The builder's fitted encoding (TFDS metadata.json of its cache)."""
  if 'prepared_dir' not in dataset.stats:
    return None
  path = pathlib.Path(dataset.stats['prepared_dir']) / 'metadata.json'
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise DataError(
      f'{path}: cannot read the fitted encoding ({e}), expected the '
      'metadata.json of the prepared data'
    ) from e


def artefact(dataset_name: str, kwargs: dict, dataset) -> dict:
  """What preprocessing.json holds for a run's (adapted) dataset."""
  out = {
    'format': FORMAT,
    'dataset_name': dataset_name,
    'kind': 'encoded',
    'dense_names': list(dataset.dense_names),
    'sparse_names': list(dataset.sparse_names),
    'vocab_sizes': [_column_json(c) for c in dataset.vocab_sizes],
    'tasks': [
      {
        'name': t.name,
        'kind': t.kind,
        'weight': t.weight,
        'train': t.train,
        'head': t.head,
      }
      for t in dataset.tasks
    ],
  }
  meta = None
  if dataset_name in ('table', 'census_income'):
    meta = _metadata(dataset)
  if meta is None:  # No fitted encoding to save: rows come encoded.
    return out
  if dataset_name == 'table':
    out.update(
      kind='table',
      schema={
        'features': kwargs['features'],
        'tasks': kwargs['tasks'],
        'task_order': list(kwargs.get('task_order') or ()),
      },
      encoding={k: meta[k] for k in ENCODING if k in meta},
      user_column=kwargs.get('user_column'),
    )
  elif dataset_name == 'census_income':
    out.update(
      kind='census_income',
      protocol=dataset.stats['protocol'],
      task_group=dataset.stats['task_group'],
      encoding={k: meta[k] for k in ('dense', 'vocabularies')},
    )
  return out


def load(workdir) -> dict | None:
  """The workdir's preprocessing.json, or None if it has none."""
  path = pathlib.Path(workdir) / FILE
  if not path.exists():
    return None
  try:
    value = json.loads(path.read_text())
  except ValueError as e:
    raise DataError(f'{path}: is not JSON ({e})') from e
  found = value.get('format') if isinstance(value, dict) else value
  if found != FORMAT:
    raise DataError(f'{path}: format {found!r}, expected {FORMAT}')
  return value


def user_feature(artefact: dict) -> str | None:
  """The sparse column that identifies a row's user (GAUC), if any."""
  names = artefact['sparse_names']
  if artefact['kind'] == 'table':
    schema = _schema(artefact)
    for f in schema.of(sc.Categorical):
      if f.column == artefact.get('user_column') and not f.hash_buckets:
        return f.name
  for name in ('user_id', 'user', 'uid'):
    if name in names:
      return name
  return None


def _schema(artefact) -> sc.Schema:
  s = artefact['schema']
  return schema_parse.parse(s['features'], s['tasks'], tuple(s['task_order']))


class Encoder:
  """Raw rows -> the model's inputs (and labels), as the run was trained.

  Attributes:
    inputs: the columns a row must have.
    labels: the columns labels are read from (evaluation on a file).
    allowed: every column a file may hold without being an error.
  """

  def __init__(self, artefact: dict):
    self.artefact = artefact
    self.kind = artefact['kind']
    if self.kind not in KINDS:
      raise DataError(
        f'preprocessing kind {self.kind!r}, expected one of {", ".join(KINDS)}'
      )
    self.tasks = [t['name'] for t in artefact['tasks']]
    if self.kind == 'table':
      self.schema = _schema(artefact)
      self.lookups = Lookups(artefact['encoding']['tables'])
      self._derived = derived.Derived(
        self.schema, artefact['encoding'], self.source, self.lookups
      )
      self.inputs = []
      for f in self.schema.features:
        self.inputs += kind_of(f).given(f)
      self.labels = [t.label for t in self.schema.tasks]
      self.labels += [t.where.column for t in self.schema.tasks if t.where]
      self.labels += [t.divide_by for t in self.schema.tasks if t.divide_by]
    elif self.kind == 'census_income':
      self.inputs = list(cib.DENSE) + list(artefact['sparse_names'])
      self.labels = ['income', 'marital_stat', 'education']
    else:
      self.inputs = artefact['dense_names'] + artefact['sparse_names']
      self.labels = self.tasks + [f'{t}_mask' for t in self.tasks]
    self.inputs = list(dict.fromkeys(self.inputs))
    self.labels = [
      c for c in dict.fromkeys(self.labels) if c not in self.inputs
    ]
    self.allowed = set(self.inputs) | set(self.labels)
    if self.kind == 'table':  # Columns derived features are made of.
      self.allowed |= self._derived.allowed
    if self.kind == 'census_income':
      self.allowed |= set(cib.COLUMNS)

  def source(self, path, chunksize: int = 65536) -> table_files.Source:
    """How to read a CSV/TSV/Parquet file of raw rows (a census file with
    no header line is read as the raw UCI format)."""
    try:
      fmt = table_files.file_format(path, 'auto')
    except DataError:
      if self.kind != 'census_income':  # The UCI files: census-income.*.gz
        raise DataError(
          f'{path}: cannot tell its format from its name, expected a .csv, '
          '.tsv (optionally .gz) or .parquet file'
        ) from None
      fmt = 'csv'
    src = table_files.Source(str(path), fmt, None, ())
    if self.kind == 'census_income' and fmt != 'parquet':
      found = src.columns(distinct=False)  # A header, or the first row?
      if len(found) == len(cib.COLUMNS) and not set(found) & set(self.inputs):
        src = table_files.Source(str(path), fmt, None, cib.COLUMNS)
    return src

  def check_columns(self, found, path, *, labels: bool, keep=()) -> None:
    """One DataError line naming a missing or unexpected column."""
    found = list(found)
    inputs = self.inputs
    if self.kind == 'table':  # A history the rows lack is derived.
      inputs = self._derived.inputs(inputs, found)
    need = inputs + (self.labels_needed() if labels else [])
    for c in need + list(keep):
      if c not in found:
        close = did_you_mean(c, found)
        what = 'label' if c in self.labels else 'input'
        raise DataError(
          f'{path}: has no column {c!r}{close}, expected the {what} columns '
          f'{", ".join(need)}'
        )
    extra = [c for c in found if c not in self.allowed and c not in keep]
    if extra:
      raise DataError(
        f'{path}: has column {extra[0]!r}, which the model does not read, '
        f'expected only {", ".join(inputs)} (and labels '
        f'{", ".join(self.labels)}); pass --keep={extra[0]} to copy it '
        'to the output'
      )

  def labels_needed(self) -> list[str]:
    if self.kind == 'encoded':
      return [c for c in self.labels if not c.endswith('_mask')]
    if self.kind == 'census_income':
      group = self.artefact['task_group']
      return (
        ['income', 'marital_stat']
        if group == 1
        else ['education', 'marital_stat']
      )
    return self.labels

  def features(self, chunk: pd.DataFrame, start: int, path) -> dict:
    """{'dense': [n, F] f32, 'sparse': [n, S] i32} of raw rows; `start` is
    the file's 0-based row of the chunk's first row (for messages)."""
    offsets = start + np.arange(len(chunk))
    chunk = chunk.reset_index(drop=True)
    if self.kind == 'table':
      return self._table(chunk, offsets, path)
    if self.kind == 'census_income':
      return cib.encode_rows(chunk, offsets, path, self.artefact)[0]
    dense = np.zeros((len(chunk), len(self.artefact['dense_names'])))
    for j, c in enumerate(self.artefact['dense_names']):
      dense[:, j] = table_files.numbers(chunk, c, offsets, path)
    sizes = vocab_sizes(self.artefact)
    sparse = np.zeros((len(chunk), len(sizes)), np.int32)
    for j, c in enumerate(self.artefact['sparse_names']):
      ids = table_files.numbers(chunk, c, offsets, path)
      bad = (ids != np.round(ids)) | (ids < 0) | (ids >= int(sizes[j]))
      if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
          f'{path}: row {offsets[i] + 1} column {c!r} is {ids[i]:g}, expected '
          f'an id in [0, {int(sizes[j])})'
        )
      sparse[:, j] = ids
    return {'dense': dense.astype(np.float32), 'sparse': sparse}

  def labels_of(self, chunk: pd.DataFrame, start: int, path):
    """(labels [T, n] f32, mask [T, n] f32) of the dataset's own tasks."""
    offsets = start + np.arange(len(chunk))
    chunk = chunk.reset_index(drop=True)
    n = len(chunk)
    if self.kind == 'census_income':
      arrays = cib.encode_rows(chunk, offsets, path, self.artefact, True)[1]
      y = np.stack([arrays[t] for t in self.tasks]).astype(np.float32)
      return y, np.ones_like(y)
    if self.kind == 'encoded':
      ys, ms = [], []
      for t in self.tasks:
        ys.append(table_files.numbers(chunk, t, offsets, path))
        m = f'{t}_mask'
        ms.append(
          table_files.numbers(chunk, m, offsets, path)
          if m in chunk
          else np.ones(n)
        )
      return np.stack(ys).astype(np.float32), np.stack(ms).astype(np.float32)
    source = table_files.Source(str(path), 'csv', None, ())
    enc = self.artefact['encoding']
    ys, ms = [], []
    for t in self.schema.tasks:
      y, m = table_encode.encoded_label(t, chunk, offsets, source, enc)
      ys.append(y)
      ms.append(m)
    return np.stack(ys).astype(np.float32), np.stack(ms).astype(np.float32)

  def _table(self, chunk, offsets, path) -> dict:
    """As table_encode.encoded_chunks: each feature by its kind."""
    source = table_files.Source(str(path), 'csv', None, ())
    at = Rows(
      self.schema, chunk, offsets, source, self.artefact['encoding'],
      self.lookups, self._derived.values,
    )  # fmt: skip
    return feature_kinds.encode(at, 0)
