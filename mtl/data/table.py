"""The generic `table` dataset: a user's CSV, TSV or Parquet file(s) and a
feature schema, with no Python of the user's own.

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
side_tables.Joined). Ali-CCP, AliExpress and MovieLens are such configs
(configs/ali_ccp.py, aliexpress.py, movielens.py).

The Dataset's batch layout is the usual one (dataset.py): 'dense' [N, F]
(dense features, then '<name>_missing' indicators after their feature; a
count feature's '<name>.count' and '<name>.<label>', counts.py),
'sparse' [N, S] (a categorical feature one column; a sequence or history
`max_len` columns '<name>[j]', padding id 0), labels and mask [T, N]. Its
`vocab_sizes` are `Column`s (mtl/core/layers/embedding.py): each says its
feature, table and pooling, so the model embeds every feature with its own
table (a history with its item's) and pools sequences.

The prepared cache lives under `data_dir` (default TFDS's), one directory
per description (files, their sizes and times or their sha256 sums, split
and schema): changing any prepares again. A multi-host run passes
`process_index` / `process_count` (each process reads its share of the
training rows).
"""

import os
from collections.abc import Mapping

import numpy as np

from mtl.core.tasks import task_of
from mtl.data import cache, prepared
from mtl.data import csv_builder as cb
from mtl.data import schema as sc
from mtl.data.dataset import Dataset
from mtl.data.encoding import table_size
from mtl.data.feature_kinds import kind_of
from mtl.data.leakage import check_no_label_leakage
from mtl.data.table_spec import describe

# The default of the mapping keywords; read only, never changed (a config
# holds its own copy of it as an empty ConfigDict).
_EMPTY: Mapping = {}


def layout(schema: sc.Schema, encoding: dict):
  """(dense names, sparse names, vocab sizes as Columns) of the records:
  each feature's inputs and embedding by its kind (feature_kinds.py)."""
  dense, sparse, columns = [], [], []
  for f in schema.features:
    kind = kind_of(f)
    d, s = kind.inputs(f, schema)
    dense += d
    sparse += s
    columns += [kind.embedding(f, schema, encoding) for _ in s]
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
  beam_options: tuple[str, ...] | None = None,
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
    beam_options: None: prepared in this process; else Apache Beam
      pipeline flags (e.g. ('--direct_num_workers=2',
      '--direct_running_mode=multi_processing')): prepared on Beam, the
      same bits (beam_prepare.py; needs the [beam] extra).
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
    lambda b: prepared_dataset(b, t.schema, name, process_index, process_count),
    name=name,
    raw_missing=t.raw_missing,
    rebuild=process_index == 0,
  )


def prepared_dataset(
  builder, schema, name, process_index, process_count, eval_rows=None
) -> Dataset:
  """The Dataset of a prepared table `builder` of `schema`: this process's
  share of the training rows (`process_index` of `process_count`), every
  evaluation row (or the first `eval_rows`), checked for label leakage."""
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
  tasks = tuple(task_of(t, encoding['labels']) for t in schema.tasks)
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
    'table_sizes': {t: table_size(e) for t, e in encoding['tables'].items()},
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
