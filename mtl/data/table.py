"""The generic `table` dataset: a user's CSV, TSV or Parquet file(s) and a
feature schema, with no Python of the user's own (issue 14 items 1-4).

The schema (`features`, `tasks`; schema.py says every key) describes each
column; table_builder.py prepares the files through TFDS into array_record,
streamed in chunks, with training-split vocabularies and normalisers and
leak-free behaviour histories. A config is the whole description, e.g.
(configs/movielens_table.py, configs/kuairand.py are complete ones):

  config = common.base_config('mmoe', 'table')
  config.dataset.path = 'interactions.csv.gz'
  config.dataset.split = 'user_last'           # or random, time, files
  config.dataset.user_column = 'user_id'
  config.dataset.time_column = 'ts'
  config.dataset.features = {
    'user_id': {'kind': 'categorical'},
    'item_id': {'kind': 'categorical', 'min_count': 2},
    'price': {'kind': 'dense', 'normalize': 'log1p', 'missing': 'mean'},
    'history': {'kind': 'history', 'user': 'user_id', 'item': 'item_id',
                'time': 'ts', 'max_len': 20},
  }
  config.dataset.tasks = {
    'click': {'label': 'click'},
    'buy': {'label': 'buy', 'where': 'click == 1'},
  }

Splits: `split='files'` takes `path` (train), `validation_path` and
`test_path`; otherwise `path` is the whole table, split 'random'
(`validation_fraction`, `test_fraction`, `split_seed`), 'time' (the latest
rows by `time_column`) or 'user_last' (each `user_column` user's last
`last_n` rows by `time_column` to test, the `last_n` before to validation).

The Dataset's batch layout is the usual one (dataset.py): 'dense' [N, F]
(dense features, then '<name>_missing' indicators after their feature),
'sparse' [N, S] (a categorical feature one column; a sequence or history
`max_len` columns '<name>[j]', padding id 0), labels and mask [T, N]. Its
`vocab_sizes` are `Column`s (mtl/core/layers/embedding.py): each says its
feature, table and pooling, so the model embeds every feature with its own
table (a history with its item's) and pools sequences.

The prepared cache lives under `data_dir` (default TFDS's), one directory
per description (files, their sizes and times, split and schema): changing
any prepares again. A multi-host run passes `process_index` /
`process_count` (each process reads its share of the training rows).
"""

import logging
import os
import pathlib
import re
from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from ml_collections import FrozenConfigDict

from mtl.core.layers.embedding import Column
from mtl.core.tasks import Task
from mtl.data import cache, prepared
from mtl.data import csv_builder as cb
from mtl.data import schema as sc
from mtl.data import table_builder as tb
from mtl.data.dataset import Dataset
from mtl.data.leakage import check_no_label_leakage
from mtl.errors import ConfigError, DataFileNotFound

_EMPTY = FrozenConfigDict({})


class _CustomConfig(logging.Filter):
  """Drops TFDS's warning that a builder config is not predefined."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith('Using custom data config')


def _to_dict(d) -> dict:
  """A plain (nested) dict of a ConfigDict, FrozenConfigDict or dict."""
  if hasattr(d, 'to_dict'):
    return d.to_dict()
  if isinstance(d, Mapping):
    return {
      k: _to_dict(v) if isinstance(v, Mapping) else v for k, v in d.items()
    }
  return d


def _source(key: str, path, fmt: str, delimiter, column_names) -> tb.Source:
  if path is None:
    raise ConfigError(f'dataset.{key} is not set, expected a file')
  text = os.path.expandvars(str(path))
  unset = re.search(r'\$\{?(\w+)', text)
  if unset:
    raise ConfigError(
      f'dataset.{key} is {str(path)!r}: ${unset[1]} is not set, expected '
      'it to name a folder'
    )
  path = pathlib.Path(text).expanduser()
  if not path.is_file():
    raise DataFileNotFound(f'dataset.{key}: {path} is not a file')
  fmt = tb.file_format(path, fmt)
  if delimiter is not None and (
    fmt == 'parquet' or not isinstance(delimiter, str) or len(delimiter) != 1
  ):
    raise ConfigError(
      f'dataset.delimiter is {delimiter!r}, expected one character for a '
      'CSV/TSV file (or unset)'
    )
  return tb.Source(str(path), fmt, delimiter, tuple(column_names))


def _split(**kw) -> dict:
  rule = kw['rule']
  tb_rules = tb.SPLIT_RULES
  if rule not in tb_rules:
    raise ConfigError(
      f'dataset.split is {rule!r}, expected one of {", ".join(tb_rules)}'
    )
  if rule == 'files':
    return {'rule': rule}
  fractions = (kw['validation_fraction'], kw['test_fraction'])
  if rule != 'user_last' and not (min(fractions) > 0 and sum(fractions) < 1):
    raise ConfigError(
      f'dataset.validation_fraction {fractions[0]!r} and test_fraction '
      f'{fractions[1]!r}, expected positive numbers with a sum below 1'
    )
  out = {'rule': rule}
  if rule == 'random':
    out.update(
      validation_fraction=float(fractions[0]),
      test_fraction=float(fractions[1]),
      seed=int(kw['split_seed']),
    )
  if rule in ('time', 'user_last'):
    if not kw['time_column']:
      raise ConfigError(
        f'dataset.time_column is not set, expected it for split {rule!r}'
      )
    out['time_column'] = kw['time_column']
  if rule == 'time':
    out.update(
      validation_fraction=float(fractions[0]), test_fraction=float(fractions[1])
    )
  if rule == 'user_last':
    if not kw['user_column']:
      raise ConfigError(
        "dataset.user_column is not set, expected it for split 'user_last'"
      )
    if isinstance(kw['last_n'], bool) or not isinstance(kw['last_n'], int):
      raise ConfigError(f'dataset.last_n is {kw["last_n"]!r}, expected an int')
    if kw['last_n'] < 1:
      raise ConfigError(f'dataset.last_n is {kw["last_n"]}, expected >= 1')
    out.update(user_column=kw['user_column'], last_n=kw['last_n'])
  return out


def layout(schema: sc.Schema, encoding: dict):
  """(dense names, sparse names, vocab sizes as Columns) of the records."""
  dense, sparse, columns = [], [], []
  tables = encoding['tables']
  for f in schema.features:
    if isinstance(f, sc.Session):  # Derived labels, no input.
      continue
    if isinstance(f, sc.Dense):
      dense.append(f.name)
      if f.missing_indicator:
        dense.append(f'{f.name}_missing')
      continue
    table = schema.table_of(f.name)
    size = sc.table_size(tables[table])
    dim = schema[table].embed_dim
    if isinstance(f, sc.Categorical):
      sparse.append(f.name)
      columns.append(Column(size, feature=f.name, table=table, dim=dim))
      continue
    for j in range(f.max_len):
      sparse.append(f'{f.name}[{j}]')
      columns.append(
        Column(size, feature=f.name, table=table, pooling=f.pooling, dim=dim)
      )
  return tuple(dense), tuple(sparse), tuple(columns)


def load_table(
  *,
  path: str | None = None,
  validation_path: str | None = None,
  test_path: str | None = None,
  file_format: str = 'auto',
  delimiter: str | None = None,
  column_names: tuple[str, ...] = (),
  features: Mapping = _EMPTY,
  tasks: Mapping = _EMPTY,
  task_order: tuple[str, ...] = (),
  split: str = 'random',
  validation_fraction: float = 0.1,
  test_fraction: float = 0.1,
  split_seed: int = 0,
  time_column: str | None = None,
  user_column: str | None = None,
  last_n: int = 1,
  name: str = 'table',
  data_dir: str | os.PathLike | None = None,
  chunksize: int = cb.DEFAULT_CHUNKSIZE,
  process_index: int = 0,
  process_count: int = 1,
) -> Dataset:
  """Loads a table described by its schema as train / validation / test.

  Args:
    path: the table (or, with split='files', the training file); $VARS
      (e.g. $MTL_DATA_DIR) are expanded when it is read.
    validation_path, test_path: the other files of split='files'.
    file_format: 'auto' (from the file name), 'csv', 'tsv' or 'parquet'.
    delimiter: the field separator of a CSV/TSV file (default ',' / tab).
    column_names: the columns of a file without a header line; empty: the
      first line is the header.
    features, tasks: the schema (schema.py).
    task_order: tasks to put first (the rest follow by name).
    split: 'files', 'random', 'time' or 'user_last' (module docstring).
    validation_fraction, test_fraction, split_seed: of 'random' / 'time'.
    time_column, user_column, last_n: of 'time' / 'user_last'.
    name: the dataset's name in messages, stats and the cache's name.
    data_dir: TFDS data directory for the prepared cache; default TFDS's.
    chunksize: rows per read and per prepared record when preparing.
    process_index, process_count: this process's share of the train rows.

  Raises:
    ConfigError: a bad keyword or schema entry.
    DataError: a file, row or column that does not fit the schema, or a
      feature that leaks a label (DataFileNotFound: a missing file).
  """
  features, tasks = _to_dict(features), _to_dict(tasks)
  schema = sc.parse(features, tasks, tuple(task_order))
  check_choice = tb.FORMATS
  if file_format not in check_choice:
    raise ConfigError(
      f'dataset.file_format is {file_format!r}, expected one of '
      f'{", ".join(check_choice)}'
    )
  if not isinstance(chunksize, int) or isinstance(chunksize, bool):
    raise ConfigError(f'dataset.chunksize is {chunksize!r}, expected an int')
  if chunksize < 1:
    raise ConfigError(f'dataset.chunksize is {chunksize}, expected >= 1')
  split_spec = _split(
    rule=split,
    validation_fraction=validation_fraction,
    test_fraction=test_fraction,
    split_seed=split_seed,
    time_column=time_column,
    user_column=user_column,
    last_n=last_n,
  )
  extra = ('validation_path', validation_path), ('test_path', test_path)
  if split == 'files':
    keys = (('path', 'train'), ('validation_path', 'validation'))
    keys += (('test_path', 'test'),)
    given = {'path': path, 'validation_path': validation_path}
    given['test_path'] = test_path
    sources = {
      split_name: _source(key, given[key], file_format, delimiter, column_names)
      for key, split_name in keys
    }
  else:
    for key, value in extra:
      if value is not None:
        raise ConfigError(
          f"dataset.{key} is set with split {split!r}, expected split='files' "
          '(or no such file: the table is split by the rule)'
        )
    sources = {
      'table': _source('path', path, file_format, delimiter, column_names)
    }
  spec = tb.spec_of(
    name=name,
    sources=sources,
    split=split_spec,
    features=features,
    tasks=tasks,
    task_order=tuple(task_order),
  )

  def make_builder():
    quiet = _CustomConfig()  # Every table has its own config: no news.
    absl_logging.get_absl_logger().addFilter(quiet)
    try:
      return tb.Table(
        config=tb.TableConfig(spec=spec),
        data_dir=data_dir,
        file_format='array_record',
        chunksize=chunksize,
      )
    finally:
      absl_logging.get_absl_logger().removeFilter(quiet)

  def prepare(builder):
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )

  # A cache that cannot be used is prepared again from the files (cache.py).
  return cache.load(
    make_builder,
    prepare,
    lambda b: _dataset(b, schema, name, process_index, process_count),
    name=name,
    raw_missing=lambda: [
      s.path for s in sources.values() if not pathlib.Path(s.path).is_file()
    ],
    rebuild=process_index == 0,
  )


def _dataset(builder, schema, name, process_index, process_count) -> Dataset:
  encoding = builder.info.metadata
  raw, share = prepared.read_splits(builder, process_index, process_count)
  width_dense, width_sparse, _ = builder.widths()
  splits = {
    s: {
      'dense': np.ascontiguousarray(a['dense'][:, :width_dense]),
      'sparse': np.ascontiguousarray(a['sparse'][:, :width_sparse]),
      'labels': np.ascontiguousarray(a['labels'].T),
      'mask': np.ascontiguousarray(a['mask'].T),
    }
    for s, a in raw.items()
  }
  dense, sparse, columns = layout(schema, encoding)
  tasks = tuple(Task(t.name, t.kind, t.weight) for t in schema.tasks)
  task_names = tuple(t.name for t in tasks)
  check_no_label_leakage(
    **splits['train'],
    feature_names=dense + sparse,
    task_names=task_names,
    where=f'{name} train',
  )

  def label_mean(a):
    m = a['mask']
    means = (a['labels'] * m).sum(1) / np.maximum(m.sum(1), 1)
    return dict(zip(task_names, map(float, means), strict=True))

  stats = {
    'prepared_dir': str(builder.data_path),
    'share': share,
    'rows': {s: int(a['labels'].shape[1]) for s, a in splits.items()},
    'label_mean': {s: label_mean(a) for s, a in splits.items()},
    'table_sizes': {t: sc.table_size(e) for t, e in encoding['tables'].items()},
    'dense_normalisers': dict(encoding['dense']),
    'label_normalisers': dict(encoding['labels']),
  }
  return Dataset(
    name=name,
    tasks=tasks,
    dense_names=dense,
    sparse_names=sparse,
    vocab_sizes=columns,
    splits=splits,
    stats=stats,
  )
