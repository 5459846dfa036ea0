"""The generic `table` dataset (mtl/data/table.py, table_builder.py): tiny
tables written under tmp_path, every encoded value checked against pandas
and numpy, the split rules, one-line errors, Parquet and gzip, and a user's
short config file trained from a CSV through mtl.shell.trainer.train."""

import gc
import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from mtl.data import (
  DATASETS,
  encoding,
  schema_parse,
  table_files,
  table_plan,
  table_splits,
)
from mtl.data import table_builder as tb
from mtl.errors import ConfigError, DataError, DataFileNotFound

N = 600


def interactions(n=N, seed=0) -> pd.DataFrame:
  rng = np.random.default_rng(seed)
  df = pd.DataFrame(
    {
      'user': rng.integers(0, 30, n),
      'item': rng.integers(0, 80, n),
      'ts': rng.integers(0, 300, n),
      'price': rng.gamma(2.0, 3.0, n).round(3),
      'tags': [
        '|'.join(rng.choice(list('abcdefg'), rng.integers(0, 5)))
        for _ in range(n)
      ],
      'click': rng.integers(0, 2, n),
      'dwell': rng.gamma(1.5, 20.0, n).round(1),
    }
  )
  df['buy'] = df.click * rng.integers(0, 2, n)
  df.loc[[3, 50, 400], 'price'] = np.nan
  return df


FEATURES = {
  'user': {'kind': 'categorical'},
  'item': {'kind': 'categorical', 'min_count': 2},
  'price': {
    'kind': 'dense',
    'normalize': 'log1p_standard',
    'missing': 'mean',
    'missing_indicator': True,
  },
  'tags': {'kind': 'sequence', 'max_len': 3, 'hash_buckets': 16},
  'history': {
    'kind': 'history',
    'user': 'user',
    'item': 'item',
    'time': 'ts',
    'max_len': 4,
  },
}
TASKS = {
  'click': {'label': 'click'},
  'buy': {'label': 'buy', 'where': 'click == 1'},
  'dwell': {
    'label': 'dwell',
    'kind': 'regression',
    'transform': 'log1p',
    'scale': 'standard',
  },
}


def encode(value: str, vocab: list) -> int:
  """The oracle's id: 2 + position in the vocabulary, 1 if not in it."""
  return vocab.index(value) + 2 if value in vocab else 1


@pytest.fixture(scope='module')
def table(tmp_path_factory):
  root = tmp_path_factory.mktemp('table')
  df = interactions()
  df.to_csv(root / 't.csv.gz', index=False)
  ds = DATASETS['table'](
    path=str(root / 't.csv.gz'),
    features=FEATURES,
    tasks=TASKS,
    task_order=('click',),
    data_dir=str(root / 'tfds'),
    chunksize=128,
  )
  return root, df, ds


def test_every_value_matches_pandas(table):
  root, df, ds = table
  n_val, n_test = round(0.1 * N), round(0.1 * N)
  order = np.random.default_rng(0).permutation(N)
  rows = {
    'validation': np.sort(order[:n_val]),
    'test': np.sort(order[n_val : n_val + n_test]),
    'train': np.sort(order[n_val + n_test :]),
  }
  assert ds.stats['rows'] == {s: len(r) for s, r in rows.items()}
  assert [t.name for t in ds.tasks] == ['click', 'buy', 'dwell']
  assert ds.dense_names == ('price', 'price_missing')
  assert ds.sparse_names[:4] == tuple(f'history[{j}]' for j in range(4))
  train = df.iloc[rows['train']]
  # Vocabulary of the training rows, min_count 2; ids 2.. sorted text.
  counts = train['item'].astype(str).value_counts()
  vocab = sorted(counts[counts >= 2].index)
  price = np.log1p(train['price'].dropna())
  mean, std = price.mean(), price.std(ddof=0)
  y = np.log1p(train['dwell'])
  for split, r in rows.items():
    a, part = ds.splits[split], df.iloc[r].reset_index(drop=True)
    col = {name: j for j, name in enumerate(ds.sparse_names)}
    ids = [encode(v, vocab) for v in part.item.astype(str)]
    np.testing.assert_array_equal(a['sparse'][:, col['item']], ids)
    want = ((np.log1p(part.price) - mean) / std).fillna(0.0)
    np.testing.assert_allclose(a['dense'][:, 0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a['dense'][:, 1], part.price.isna())
    np.testing.assert_array_equal(a['labels'][0], part.click)
    np.testing.assert_array_equal(a['mask'][1], part.click)
    np.testing.assert_array_equal(a['labels'][1], part.buy * part.click)
    want = (np.log1p(part.dwell) - y.mean()) / y.std(ddof=0)
    np.testing.assert_allclose(a['labels'][2], want, rtol=1e-4, atol=1e-5)
    # Tags: the last 3, hashed; the history: the user's rows strictly
    # earlier in time over the whole table, items by the vocabulary.
    for k, (_, row) in enumerate(part.iterrows()):
      tags = str(row.tags).split('|') if isinstance(row.tags, str) else []
      tags = [t for t in tags if t]
      want_tags = [2 + encoding.stable_hash([t], 16)[0] for t in tags[-3:]]
      got = a['sparse'][k, col['tags[0]'] : col['tags[0]'] + 3]
      assert got.tolist() == want_tags + [0] * (3 - len(want_tags))
      earlier = df[(df.user == row.user) & (df.ts < row.ts)]
      earlier = earlier.sort_values('ts', kind='stable').item.astype(str)
      hist = [encode(v, vocab) for v in earlier[-4:]]
      got = a['sparse'][k, :4]
      assert got.tolist() == hist + [0] * (4 - len(hist))


def test_one_or_several_encoding_threads_write_the_same_bytes(
  table, monkeypatch
):
  root, df, _ = table
  df.to_parquet(root / 't.parquet')
  shards = []
  for workers in (1, 3):
    monkeypatch.setattr(tb, 'ENCODE_WORKERS', workers)
    DATASETS['table'](
      path=str(root / 't.parquet'),
      features=FEATURES,
      tasks=TASKS,
      task_order=('click',),
      data_dir=str(root / f'workers{workers}'),
      chunksize=32,  # 19 chunks of the 600 rows, encoded 3 at a time.
    )
    files = sorted((root / f'workers{workers}').rglob('*array_record*'))
    shards.append({f.name: f.read_bytes() for f in files})
  assert len(shards[0]) >= 3 and shards[0] == shards[1]


def test_layout_embeds_history_with_the_item_table(table):
  _, _, ds = table
  columns = dict(zip(ds.sparse_names, ds.vocab_sizes, strict=True))
  assert columns['history[0]'].table == 'item'
  assert columns['history[0]'] == columns['item']
  assert columns['tags[2]'] == 16 + 2 and columns['tags[2]'].pooling == 'mean'
  assert columns['user'].pooling is None


def load(root, name='t.csv', **kw):
  kw = {
    'features': {'user': {'kind': 'categorical'}, 'x': {'kind': 'dense'}},
    'tasks': {'y': {'label': 'y'}},
    'data_dir': str(root / 'tfds'),
    **kw,
  }
  return DATASETS['table'](path=str(root / name), **kw)


def small(n=40, seed=0):
  rng = np.random.default_rng(seed)
  return pd.DataFrame(
    {
      'user': rng.integers(0, 5, n),
      'ts': rng.integers(0, 20, n),
      'x': rng.normal(size=n).round(3),
      'y': np.arange(n) % 2,
    }
  )


@pytest.mark.parametrize(
  'cell, found',
  [('abc', "'abc'"), ('', 'empty'), ('inf', "'inf'")],
)
def test_a_bad_value_names_file_row_column_found_and_expected(
  tmp_path, cell, found
):
  df = small().astype(str)
  df.loc[7, 'x'] = cell
  df.to_csv(tmp_path / 't.csv', index=False)
  with pytest.raises(DataError) as e:
    load(tmp_path, chunksize=4)
  want = f"t.csv: row 8 column 'x' is {found}, expected a finite number"
  assert want in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize(
  'kw, error, message',
  [
    (
      dict(name='missing.csv'),
      DataFileNotFound,
      'file\\(s\\) not found: .*missing.csv',
    ),
    (
      dict(features={'usr': {'kind': 'categorical'}}),
      DataError,
      "has no column 'usr' \\(did you mean 'user'\\?\\)",
    ),
    (dict(delimiter=';;'), ConfigError, 'delimiter'),
    (dict(split='by_user'), ConfigError, "split is 'by_user'"),
    (dict(split='time'), ConfigError, 'time_column is not set'),
    (dict(validation_path='v.csv'), ConfigError, "split='files'"),
    (dict(variant='x'), ConfigError, "variant is 'x', expected one of"),
    (
      dict(variant='a', variants={'a': {'split': 'time'}}),
      ConfigError,
      "variants.a has unknown key 'split'",
    ),
    (dict(sha256={'test_path': 'ab'}), ConfigError, "names 'test_path'"),
    (
      dict(sha256={'path': 'ab'}),
      DataError,
      'has sha256 [0-9a-f]+, expected ab',
    ),
    (
      dict(split='files', test_path='t.csv', validation_fraction=0),
      ConfigError,
      'validation_fraction is 0, expected a number in \\(0, 1\\)',
    ),
    (dict(tasks={'y': {'label': 'x'}}), ConfigError, 'also feature'),
    (
      dict(tasks={'y': {'label': 'ts'}}),
      DataError,
      "row 1 column 'ts' is '8', expected 0 or 1",
    ),
  ],
)
def test_one_line_errors(tmp_path, kw, error, message):
  small().to_csv(tmp_path / 't.csv', index=False)
  with pytest.raises(error, match=message) as e:
    load(tmp_path, **kw)
  assert '\n' not in str(e.value)


def test_parquet_tsv_and_files_read_as_the_csv(tmp_path):
  df = small(60)
  df.to_csv(tmp_path / 't.csv', index=False)
  df.to_parquet(tmp_path / 't.parquet')
  df.to_csv(tmp_path / 't.tsv.gz', sep='\t', index=False)
  df.to_csv(tmp_path / 'plain.txt', sep='\t', index=False, header=False)
  csv = load(tmp_path, chunksize=7)
  for other in (
    load(tmp_path, 't.parquet', chunksize=7),
    load(tmp_path, 't.tsv.gz', chunksize=7),
    load(
      tmp_path,
      'plain.txt',
      file_format='tsv',
      column_names=tuple(df.columns),
    ),
  ):
    for split in table_splits.SPLITS:
      for key, a in csv.splits[split].items():
        np.testing.assert_array_equal(a, other.splits[split][key])
  for i, split in enumerate(table_splits.SPLITS):
    df.iloc[i * 20 : (i + 1) * 20].to_csv(
      tmp_path / f'{split}.csv', index=False
    )
  files = load(
    tmp_path,
    'train.csv',
    split='files',
    validation_path=str(tmp_path / 'validation.csv'),
    test_path=str(tmp_path / 'test.csv'),
  )
  x = df.x.to_numpy()
  train = x[:20]
  for i, split in enumerate(table_splits.SPLITS):
    want = (x[i * 20 : (i + 1) * 20] - train.mean()) / train.std()
    np.testing.assert_allclose(
      files.splits[split]['dense'][:, 0], want, rtol=1e-5, atol=1e-6
    )


def test_split_rules_against_numpy(tmp_path):
  df = small(200, seed=3)
  df.to_csv(tmp_path / 't.csv', index=False)
  s = schema_parse.parse({'x': {'kind': 'dense'}}, {'y': {'label': 'y'}})
  source = [
    (table_files.Source(str(tmp_path / 't.csv'), 'csv', None, ()), None)
  ]
  order = np.lexsort((np.arange(200), df.ts))
  plan = table_plan.Plan(
    source,
    {
      'rule': 'time',
      'time_column': 'ts',
      'validation_fraction': 0.1,
      'test_fraction': 0.2,
    },
    s,
    chunksize=16,
  )
  want = np.zeros(200, np.int8)
  want[order[-40:]] = 2
  want[order[-60:-40]] = 1
  np.testing.assert_array_equal(plan.codes, want)
  split = {'rule': 'user_last', 'time_column': 'ts', 'user_column': 'user'}
  plan = table_plan.Plan(source, {**split, 'last_n': 2}, s, chunksize=16)
  want = np.zeros(200, np.int8)
  for _, g in df.assign(row=np.arange(200)).groupby('user'):
    g = g.sort_values(['ts', 'row'], kind='stable')
    want[g.row.to_numpy()[-2:]] = 2
    want[g.row.to_numpy()[-4:-2]] = 1
  np.testing.assert_array_equal(plan.codes, want)


USER_CONFIG = '''
"""My own table: clicks and purchases, with each user's history."""

from configs import common


def get_config():
  config = common.base_config('mmoe', 'table')
  config.dataset.path = '{path}'
  config.dataset.split = 'user_last'
  config.dataset.user_column = 'user'
  config.dataset.time_column = 'ts'
  config.dataset.features = {{
    'user': {{'kind': 'categorical'}},
    'item': {{'kind': 'categorical'}},
    'price': {{'kind': 'dense', 'normalize': 'log1p', 'missing': 'zero'}},
    'history': {{'kind': 'history', 'user': 'user', 'item': 'item',
                 'time': 'ts', 'max_len': 8}},
  }}
  config.dataset.tasks = {{
    'click': {{'label': 'click'}},
    'buy': {{'label': 'buy', 'where': 'click == 1'}},
  }}
  config.dataset.task_order = ('click',)
  config.batch_size = 64
  config.num_epochs = 2
  return config
'''


def test_a_users_config_trains_mmoe_from_a_csv(tmp_path, monkeypatch):
  from mtl.shell import trainer

  interactions(1200).to_csv(tmp_path / 'mine.csv', index=False)
  path = tmp_path / 'my_table.py'
  path.write_text(USER_CONFIG.format(path=tmp_path / 'mine.csv'))
  spec = importlib.util.spec_from_file_location('my_table', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.progress_bar = False
  config.steps_per_dispatch = 4
  config.checkpoint.async_save = False
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  config.dataset.data_dir = str(tmp_path / 'tfds')
  result = trainer.train(config, tmp_path / 'workdir')
  test = result['test']
  assert {'test/auc/click', 'test/auc/buy'} <= set(test)
  assert all(np.isfinite(v) for v in test.values())
  recorded = json.loads((tmp_path / 'workdir' / 'config.json').read_text())
  assert recorded['dataset']['features']['history']['max_len'] == 8


def test_a_ratio_label_and_a_condition_on_it_against_numpy(tmp_path):
  """`divide_by`: play ratio = play / duration on the rows with a duration
  (where), and a long view 'play >= 0.5' of the ratio; a zero divisor on
  the sample space is one DataError naming the row."""
  n = 200
  rng = np.random.default_rng(1)
  df = pd.DataFrame(
    {
      'user': rng.integers(0, 5, n),
      'x': rng.normal(size=n).round(3),
      'play': rng.gamma(2.0, 10.0, n).round(2),
      'dur': np.where(rng.random(n) < 0.2, 0.0, rng.gamma(3.0, 10.0, n)),
    }
  )
  df['dur'] = df['dur'].round(2)
  df.to_csv(tmp_path / 't.csv', index=False)
  tasks = {
    'ratio': {
      'label': 'play',
      'kind': 'regression',
      'divide_by': 'dur',
      'where': 'dur > 0',
    },
    'long': {'label': 'play >= 0.5', 'divide_by': 'dur', 'where': 'dur > 0'},
  }
  ds = load(tmp_path, tasks=tasks, task_order=('ratio',))
  order = np.random.default_rng(0).permutation(n)
  rows = {
    'validation': np.sort(order[:20]),
    'test': np.sort(order[20:40]),
    'train': np.sort(order[40:]),
  }
  for split, r in rows.items():
    part, a = df.iloc[r], ds.splits[split]
    has = (part.dur > 0).to_numpy()
    ratio = np.where(has, part.play / part.dur.where(has, 1.0), 0.0)
    np.testing.assert_array_equal(a['mask'][0], has)
    np.testing.assert_allclose(a['labels'][0], ratio, rtol=1e-6)
    np.testing.assert_array_equal(a['labels'][1], has & (ratio >= 0.5))
  tasks['ratio'].pop('where')
  with pytest.raises(DataError) as e:
    load(tmp_path, name='t.csv', tasks=tasks, data_dir=str(tmp_path / 'b'))
  first = int(np.argmax(df.dur.to_numpy() <= 0)) + 1
  message = str(e.value)
  assert '\n' not in message
  assert f"row {first} column 'dur' is 0, expected a number > 0" in message
  assert "the divisor of task 'ratio'" in message
  with pytest.raises(ConfigError, match='divide_by is 3, expected a column'):
    load(tmp_path, tasks={'y': {'label': 'play', 'divide_by': 3}})


def test_files_without_validation_hold_out_a_fraction_of_train(tmp_path):
  df = small(50, seed=4)
  df.iloc[:40].to_csv(tmp_path / 'train.csv', index=False)
  df.iloc[40:].to_csv(tmp_path / 'test.csv', index=False)
  ds = load(
    tmp_path,
    'train.csv',
    split='files',
    test_path=str(tmp_path / 'test.csv'),
    validation_fraction=0.2,
    split_seed=3,
    chunksize=7,
  )
  # The oracle: one group (no stratify), round(0.2 * 40) rows drawn.
  held = np.sort(np.random.default_rng(3).choice(40, size=8, replace=False))
  train = np.setdiff1d(np.arange(40), held)
  x = df.x.to_numpy()
  mean, std = x[train].mean(), x[train].std()
  for split, rows in (('train', train), ('validation', held)):
    np.testing.assert_allclose(
      ds.splits[split]['dense'][:, 0], (x[rows] - mean) / std, atol=1e-5
    )
  assert ds.stats['rows'] == {'train': 32, 'validation': 8, 'test': 10}


def test_joins_and_extract_against_pandas(tmp_path):
  df = small(60, seed=5)
  df['item'] = np.arange(60) % 7
  df.to_csv(tmp_path / 't.csv', index=False)
  items = pd.DataFrame(
    {
      'item': np.arange(7),
      'code': [f'{c}{i}x' for i, c in enumerate('ababcab')],
      'price': np.linspace(1, 4, 7).round(2),
    }
  )
  items.to_csv(tmp_path / 'items.psv', sep='|', header=False, index=False)
  joins = {
    'items': {
      'path': str(tmp_path / 'items.psv'),
      'on': 'item',
      'column_names': ('item', 'code', 'price'),
      'delimiter': '|',
      'file_format': 'csv',
    }
  }
  ds = load(
    tmp_path,
    features={
      'user': {'kind': 'categorical'},
      'letter': {'kind': 'categorical', 'column': 'code', 'extract': '^(.)'},
      'price': {'kind': 'dense', 'normalize': 'none'},
      'num': {'kind': 'dense', 'column': 'code', 'extract': r'(\d+)'},
    },
    joins=joins,
    chunksize=9,
  )
  # The oracle: pandas' merge, then the same split (a numpy permutation).
  joined = df.merge(items, on='item', how='left')
  order = np.random.default_rng(0).permutation(60)
  train = np.sort(order[12:])
  test = np.sort(order[6:12])
  letters = joined['code'].str[0].to_numpy()
  vocab = np.sort(np.unique(letters[train]))
  j = ds.sparse_names.index('letter')
  want = np.searchsorted(vocab, letters[test]) + 2
  np.testing.assert_array_equal(ds.splits['test']['sparse'][:, j], want)
  num = joined['code'].str.extract(r'(\d+)')[0].astype(float).to_numpy()
  got = ds.splits['test']['dense'][:, ds.dense_names.index('num')]
  mean, std = num[train].mean(), num[train].std()
  np.testing.assert_allclose(got, (num[test] - mean) / std, atol=1e-5)
  got = ds.splits['test']['dense'][:, ds.dense_names.index('price')]
  np.testing.assert_allclose(got, joined['price'].to_numpy()[test], atol=1e-6)
  # A key the side table does not list is one line naming the row.
  df.loc[4, 'item'] = 99
  df.to_csv(tmp_path / 't.csv', index=False)
  with pytest.raises(DataError) as e:
    load(
      tmp_path,
      features={'price': {'kind': 'dense'}},
      joins=joins,
    )
  assert str(e.value) == (
    f"{tmp_path / 't.csv'}: row 5 column 'item' is '99', which "
    f'{tmp_path / "items.psv"} does not list'
  )


def test_a_split_is_written_shard_by_shard_without_a_shuffle_buffer(
  tmp_path, monkeypatch
):
  """Records go straight to array_record shards of SHARD_RECORDS records:
  TFDS's shuffle buffer (which holds a split in memory and spills past
  1 GiB through TensorFlow) is never made. 160 training rows in records of
  7 rows are 23 records: 2 shards of up to 16, or 8 of up to 3, and both
  read back equal, row for row, in file order."""
  from tensorflow_datasets.core import shuffle

  def no_buffer(*args, **kwargs):
    raise AssertionError('the shuffle buffer was used')

  monkeypatch.setattr(shuffle, 'Shuffler', no_buffer)
  df = small(n=200)
  df.to_csv(tmp_path / 't.csv', index=False)
  shards = {}
  for records in (16, 3):
    monkeypatch.setattr(tb, 'SHARD_RECORDS', records)
    root = tmp_path / f'shards_{records}'
    shards[records] = load(tmp_path, chunksize=7, data_dir=str(root))
    files = sorted(root.glob('table/*/*/table-train.array_record-*'))
    assert len(files) == -(-23 // records)
  assert shards[3].stats['rows'] == {'train': 160, 'validation': 20, 'test': 20}
  train = np.sort(np.random.default_rng(0).permutation(200)[40:])
  np.testing.assert_array_equal(
    shards[3].splits['train']['labels'][0], df.y[train]
  )
  for split, arrays in shards[16].splits.items():
    for key, values in arrays.items():
      np.testing.assert_array_equal(shards[3].splits[split][key], values)


def test_loading_lets_go_of_the_tfds_builder(tmp_path):
  """TFDS keeps every builder it makes alive, with its metadata (a table's
  vocabularies: 120 MB of RSS at 2M ids), in an unbounded lru_cache on
  DatasetBuilder.info; build.load_dataset lets go of it once the dataset
  is read. Counted with the garbage collector."""
  from configs import common
  from mtl.data import prepared
  from mtl.data import table as tl
  from mtl.shell import build

  def live_builders():
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, tb.Table)]

  small().to_csv(tmp_path / 't.csv', index=False)
  config = common.base_config('mmoe', 'table')
  config.dataset.path = str(tmp_path / 't.csv')
  config.dataset.data_dir = str(tmp_path / 'tfds')
  config.dataset.features = {'user': {'kind': 'categorical'}}
  config.dataset.tasks = {'y': {'label': 'y'}}
  prepared.forget_builders()  # Other tests' builders, in this process.
  # Held: a builder an earlier test left alive and that is let go of in
  # between (CI: 1 before, 0 after loading) would hide a new one.
  held = live_builders()
  before = len(held)
  dataset = build.load_dataset(config)
  assert dataset.num_rows('train') == 32
  assert len(live_builders()) == before
  # The oracle's other side: a builder whose info was read stays alive.
  builder = tl.describe(**config.dataset.to_dict()).make_builder()
  assert builder.info.metadata['rows']['train'] == 32
  del builder
  assert len(live_builders()) == before + 1
  prepared.forget_builders()
  assert len(live_builders()) == before
