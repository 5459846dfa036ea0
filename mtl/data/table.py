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

Files may be given per `variant` (`variants`), in `manual_dir`, with
`sha256` sums (checked when preparing; the cache is then found without the
files), and side tables may add columns by key (`joins`:
table_builder.Joined). Ali-CCP, AliExpress and MovieLens are such configs
(configs/ali_ccp.py, aliexpress.py, movielens.py).

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

import hashlib
import logging
import os
import pathlib
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

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
from mtl.errors import ConfigError, DataError, DataFileNotFound

_EMPTY = FrozenConfigDict({})
FILE_KEYWORDS = (
  'path', 'validation_path', 'test_path', 'manual_dir', 'sha256', 'source',
)  # fmt: skip
SPLIT_KEYWORDS = (
  'validation_fraction', 'test_fraction', 'split_seed', 'stratify',
  'time_column', 'user_column', 'last_n',
)  # fmt: skip


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


JOIN_KEYS = {
  'path': None, 'on': None, 'key': None, 'column_names': (),
  'delimiter': None, 'file_format': 'auto', 'encoding': 'utf-8',
  'sha256': None,
}  # fmt: skip


def _join_entry(where: str, entry) -> dict:
  """A `joins` entry with its defaults; unknown or missing keys fail."""
  if not isinstance(entry, Mapping):
    raise ConfigError(f'dataset.{where} is {entry!r}, expected a dict')
  for key in entry:
    if key not in JOIN_KEYS:
      raise ConfigError(
        f'dataset.{where} has unknown key {key!r}, expected some of '
        f'{", ".join(JOIN_KEYS)}'
      )
  for key in ('path', 'on'):
    if not entry.get(key):
      raise ConfigError(f'dataset.{where} is missing key {key!r}')
  return JOIN_KEYS | dict(entry)


def _source(
  key: str, path, folder, fmt: str, delimiter, column_names, encoding='utf-8'
):
  """The Source of file keyword `key` (a relative path is in `folder`); the
  file need not exist yet (load_table names every missing one at once)."""
  if path is None:
    raise ConfigError(f'dataset.{key} is not set, expected a file')
  path = _expand(key, path)
  if folder is not None and not path.is_absolute():
    path = _expand('manual_dir', folder) / path
  fmt = tb.file_format(path, fmt)
  if delimiter is not None and (
    fmt == 'parquet' or not isinstance(delimiter, str) or len(delimiter) != 1
  ):
    raise ConfigError(
      f'dataset.delimiter is {delimiter!r}, expected one character for a '
      'CSV/TSV file (or unset)'
    )
  return tb.Source(str(path), fmt, delimiter, tuple(column_names), encoding)


def _expand(key: str, path) -> pathlib.Path:
  """`path` with its $VARS and ~ expanded; an unset $VAR is a ConfigError."""
  text = os.path.expandvars(str(path))
  unset = re.search(r'\$\{?(\w+)', text)
  if unset:
    raise ConfigError(
      f'dataset.{key} is {str(path)!r}: ${unset[1]} is not set, expected '
      'it to name a folder'
    )
  return pathlib.Path(text).expanduser()


def _variant(variant, variants: dict, given: dict) -> dict:
  """The file keywords `given`, those left unset (None or empty) taken from
  `variants[variant]`."""
  if not variants and variant is None:
    return given
  if variant not in variants:
    raise ConfigError(
      f'dataset.variant is {variant!r}, expected one of '
      f'{", ".join(variants) or "(none: dataset.variants is empty)"}'
    )
  chosen = variants[variant]
  for key in chosen:
    if key not in given:
      raise ConfigError(
        f'dataset.variants.{variant} has unknown key {key!r}, expected '
        f'some of {", ".join(given)}'
      )
  return {k: v if v else chosen.get(k, v) for k, v in given.items()}


def _missing(name: str, paths, source) -> str:
  """The message naming missing files and where they come from."""
  where = f'; {source}' if source else ''
  return f'{name}: file(s) not found: {", ".join(map(str, paths))}{where}'


def check_sha256(name: str, path, expected: str) -> None:
  """Raises a DataError unless the file's sha256 is `expected`."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  if digest.hexdigest() != expected.lower():
    raise DataError(
      f'{name}: {path} has sha256 {digest.hexdigest()}, expected '
      f'{expected.lower()} (the registered file: a damaged or other copy)'
    )


def _split(**kw) -> dict:
  rule = kw['rule']
  tb_rules = tb.SPLIT_RULES
  if rule not in tb_rules:
    raise ConfigError(
      f'dataset.split is {rule!r}, expected one of {", ".join(tb_rules)}'
    )
  fractions = (kw['validation_fraction'], kw['test_fraction'])
  if rule == 'files':
    if not kw['holdout']:
      return {'rule': rule}
    if not 0 < fractions[0] < 1:
      raise ConfigError(
        f'dataset.validation_fraction is {fractions[0]!r}, expected a number '
        'in (0, 1) (the share of the training file held out: no '
        'validation_path)'
      )
    return {
      'rule': rule,
      'holdout': {
        'fraction': float(fractions[0]),
        'seed': int(kw['split_seed']),
        'stratify': list(kw['stratify']),
      },
    }
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
  manual_dir: str | None = None,
  sha256: Mapping = _EMPTY,
  source: str | None = None,
  variant: str | None = None,
  variants: Mapping = _EMPTY,
  joins: Mapping = _EMPTY,
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
  stratify: tuple[str, ...] = (),
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
    validation_path, test_path: the other files of split='files'; without
      validation_path, validation is `validation_fraction` of the training
      file (seed `split_seed`, stratified by the `stratify` columns).
    manual_dir: the folder of relative file paths (default: as given).
    sha256: {file keyword ('path', ...): sha256}: checked when the table is
      prepared; such a file is known by its sum, so the prepared table is
      read again without it.
    source: where the files come from, said when one is missing.
    variant, variants: `variants[variant]` gives the file keywords above
      that are left unset (e.g. a public sample and the full files).
    joins: {name: side table}: each row gets the columns of a side table's
      row whose `key` column (default `on`) equals its `on` column; a side
      table has `path` (relative: in manual_dir), `column_names`,
      `delimiter`, `file_format`, `encoding` and `sha256` as a file.
    file_format: 'auto' (from the file name), 'csv', 'tsv' or 'parquet'.
    delimiter: the field separator of a CSV/TSV file (default ',' / tab).
    column_names: the columns of a file without a header line; empty: the
      first line is the header.
    features, tasks: the schema (schema.py).
    task_order: tasks to put first (the rest follow by name).
    split: 'files', 'random', 'time' or 'user_last' (module docstring).
    validation_fraction, test_fraction, split_seed: of 'random' / 'time'
      (and of the validation hold-out of 'files').
    stratify: columns whose value combinations the hold-out samples alike.
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
  t = describe(**locals())
  # A cache that cannot be used is prepared again from the files (cache.py).
  return cache.load(
    t.make_builder,
    t.prepare,
    lambda b: _dataset(b, t.schema, name, process_index, process_count),
    name=name,
    raw_missing=t.raw_missing,
    rebuild=process_index == 0,
  )


class Described(NamedTuple):
  """A table's schema, its prepared data's builder and how to prepare it."""

  schema: sc.Schema
  make_builder: Callable[[], tb.Table]
  prepare: Callable[[tb.Table], None]
  raw_missing: Callable[[], list[str]]


def describe(**kw) -> Described:
  """What load_table's keywords describe (checked: ConfigError, or
  DataFileNotFound for a file that is missing and has no sha256)."""
  name, chunksize = kw['name'], kw['chunksize']
  features, tasks = _to_dict(kw['features']), _to_dict(kw['tasks'])
  task_order = tuple(kw['task_order'])
  schema = sc.parse(features, tasks, task_order)
  if kw['file_format'] not in tb.FORMATS:
    raise ConfigError(
      f'dataset.file_format is {kw["file_format"]!r}, expected one of '
      f'{", ".join(tb.FORMATS)}'
    )
  if not isinstance(chunksize, int) or isinstance(chunksize, bool):
    raise ConfigError(f'dataset.chunksize is {chunksize!r}, expected an int')
  if chunksize < 1:
    raise ConfigError(f'dataset.chunksize is {chunksize}, expected >= 1')
  files = _variant(
    kw['variant'],
    _to_dict(kw['variants']),
    {k: kw[k] for k in FILE_KEYWORDS} | {'sha256': _to_dict(kw['sha256'])},
  )
  sums = dict(files['sha256'] or {})
  split = kw['split']
  roles = {'path': 'train', 'validation_path': 'validation'}
  roles['test_path'] = 'test'
  if split != 'files':
    for key in ('validation_path', 'test_path'):
      if files[key] is not None:
        raise ConfigError(
          f"dataset.{key} is set with split {split!r}, expected split='files' "
          '(or no such file: the table is split by the rule)'
        )
    roles = {'path': 'table'}
  elif files['validation_path'] is None:
    del roles['validation_path']  # Held out of the training file.
  for key in sums:
    if key not in roles:
      raise ConfigError(
        f'dataset.sha256 names {key!r}, expected some of {", ".join(roles)}'
      )
  split_spec = _split(
    rule=split,
    holdout=split == 'files' and 'validation_path' not in roles,
    **{k: kw[k] for k in SPLIT_KEYWORDS},
  )
  sources = {
    role: _source(
      key,
      files[key],
      files['manual_dir'],
      kw['file_format'],
      kw['delimiter'],
      kw['column_names'],
    )  # fmt: skip
    for key, role in roles.items()
  }
  sums = {roles[k]: v for k, v in sums.items()}
  joins = {}
  for join, entry in _to_dict(kw['joins']).items():
    where = f'joins.{join}'
    entry = _join_entry(where, entry)
    sources[f'join:{join}'] = _source(
      f'{where}.path', entry['path'], files['manual_dir'],
      entry['file_format'], entry['delimiter'], entry['column_names'],
      entry['encoding'],
    )  # fmt: skip
    if entry['sha256']:
      sums[f'join:{join}'] = entry['sha256']
    joins[join] = {'on': entry['on'], 'key': entry['key'] or entry['on']}

  def raw_missing():
    return [
      s.path for s in sources.values() if not pathlib.Path(s.path).is_file()
    ]

  missing = {r for r, s in sources.items() if s.path in raw_missing()}
  if missing - set(sums):  # A file known by its sum may be cached.
    raise DataFileNotFound(_missing(name, raw_missing(), files['source']))
  spec = tb.spec_of(
    name=name,
    sources=sources,
    sha256=sums,
    split=split_spec,
    features=features,
    tasks=tasks,
    task_order=task_order,
    joins=joins,
  )

  def make_builder():
    quiet = _CustomConfig()  # Every table has its own config: no news.
    absl_logging.get_absl_logger().addFilter(quiet)
    try:
      return tb.Table(
        config=tb.TableConfig(spec=spec),
        data_dir=kw['data_dir'],
        file_format='array_record',
        chunksize=chunksize,
      )
    finally:
      absl_logging.get_absl_logger().removeFilter(quiet)

  def prepare(builder):
    if raw_missing():
      raise DataFileNotFound(_missing(name, raw_missing(), files['source']))
    for role, expected in sums.items():
      check_sha256(name, sources[role].path, expected)
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )

  return Described(schema, make_builder, prepare, raw_missing)


def _dataset(
  builder, schema, name, process_index, process_count, eval_rows=None
) -> Dataset:
  encoding = builder.info.metadata
  raw, share = prepared.read_splits(
    builder, process_index, process_count, eval_rows
  )
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
