"""MovieLens 100K through the `table` dataset (configs/movielens.py: u.data
joined with u.user and u.item by the table path's `joins`).

The raw u.* files are read here with pandas as the oracle: the split is the
documented numpy permutation of the u.data lines, every expected feature
and label is computed from the raw tables joined by pandas.
"""

import shutil

import numpy as np
import pandas as pd
import pytest

from configs import movielens as config
from mtl.data import DATASETS
from mtl.errors import ConfigError, DataError, DataFileNotFound


def load(arg='mmoe', **overrides):
  kwargs = config.get_config(arg).dataset.to_dict()
  return DATASETS['table'](**{**kwargs, **overrides})


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return tmp_path_factory.getbasetemp() / 'tfds-shared'


@pytest.fixture(scope='module')
def ds(tfds_dir, data_dir):
  return load(data_dir=str(tfds_dir))


@pytest.fixture(scope='module')
def raw(data_dir):
  folder = data_dir / 'movielens-100k'
  ratings = pd.read_csv(
    folder / 'u.data', sep='\t', names=['user', 'item', 'rating', 'time']
  )
  users = pd.read_csv(
    folder / 'u.user',
    sep='|',
    names=['user', 'age', 'gender', 'occupation', 'zip'],
    dtype={'zip': str},
  )
  items = pd.read_csv(
    folder / 'u.item', sep='|', header=None, encoding='latin-1'
  ).rename(columns={0: 'item', 2: 'release'})
  joined = ratings.merge(users, on='user', how='left').merge(
    items, on='item', how='left'
  )
  assert len(joined) == 100_000
  return joined


@pytest.fixture(scope='module')
def rows():
  order = np.random.default_rng(0).permutation(100_000)
  return {
    'validation': np.sort(order[:10_000]),
    'test': np.sort(order[10_000:20_000]),
    'train': np.sort(order[20_000:]),
  }


def test_split_is_80_10_10_of_all_ratings(ds):
  assert ds.stats['rows'] == {
    'train': 80_000,
    'validation': 10_000,
    'test': 10_000,
  }
  assert len(ds.dense_names) == 21 and len(ds.sparse_names) == 5
  assert [(t.name, t.kind) for t in ds.tasks] == [
    ('rating', 'regression'),
    ('like', 'binary'),
  ]


def test_labels_match_u_data(ds, raw, rows):
  mean = raw['rating'].iloc[rows['train']].mean()
  assert ds.stats['label_normalisers']['rating']['mean'] == pytest.approx(mean)
  for split, r in rows.items():
    rating = raw['rating'].to_numpy()[r]
    labels = ds.splits[split]['labels']
    np.testing.assert_allclose(labels[0], rating - mean, atol=1e-5)
    np.testing.assert_array_equal(labels[1], rating >= 4)
  likes = sum(ds.splits[s]['labels'][1].sum() for s in rows)
  assert likes == (raw['rating'] >= 4).sum() == 55_375


def test_sparse_features_use_training_vocabularies(ds, raw, rows):
  columns = {
    'user_id': raw['user'],
    'item_id': raw['item'],
    'gender': raw['gender'],
    'occupation': raw['occupation'],
    'zip_prefix': raw['zip'].str[0],
  }
  assert set(ds.sparse_names) == set(columns)
  for j, name in enumerate(ds.sparse_names):
    values = columns[name].astype(str).to_numpy()
    vocab = np.sort(np.unique(values[rows['train']]))
    assert ds.vocab_sizes[j] == len(vocab) + 2, name  # padding, OOV
    for split, r in rows.items():
      seen = np.isin(values[r], vocab)
      want = np.where(seen, np.searchsorted(vocab, values[r]) + 2, 1)
      np.testing.assert_array_equal(ds.splits[split]['sparse'][:, j], want)
  # Items rated only outside training are out of vocabulary (id 1).
  only_held_out = set(raw['item']) - set(raw['item'].iloc[rows['train']])
  assert only_held_out
  j = ds.sparse_names.index('item_id')
  test_items = raw['item'].to_numpy()[rows['test']]
  oov = ds.splits['test']['sparse'][:, j] == 1
  np.testing.assert_array_equal(oov, np.isin(test_items, list(only_held_out)))
  assert ds.stats['table_sizes']['gender'] == 2 + 2


def test_dense_features(ds, raw, rows):
  def standard(x):
    train = x.iloc[rows['train']]
    return ((x - train.mean()) / train.std(ddof=0)).fillna(0).to_numpy()

  year = pd.to_datetime(raw['release'], format='%d-%b-%Y').dt.year
  want = {'age': standard(raw['age']), 'release_year': standard(year)}
  for i, g in enumerate(config.GENRES):
    want[f'genre_{g}'] = raw[5 + i].to_numpy()
  assert set(ds.dense_names) == set(want)
  for split, r in rows.items():
    dense = ds.splits[split]['dense']
    for j, name in enumerate(ds.dense_names):
      np.testing.assert_allclose(dense[:, j], want[name][r], atol=1e-5)


def test_history_of_previously_rated_movies(tfds_dir, raw, rows):
  ds = load('mmoe,3', data_dir=str(tfds_dir))
  names = list(ds.sparse_names)
  at = names.index('history[0]')
  item_col = names.index('item_id')
  test = raw.iloc[rows['test']].reset_index(drop=True)
  a = ds.splits['test']['sparse']
  for k in (0, 1, 2, 500, 9_999):
    row = test.iloc[k]
    earlier = raw[(raw.user == row.user) & (raw.time < row.time)]
    earlier = earlier.assign(line=earlier.index).sort_values(['time', 'line'])
    want_items = earlier.item.to_numpy()[-3:]
    # Ids through the item vocabulary: read them off rows with those items.
    ids = [
      ds.splits['train']['sparse'][
        np.flatnonzero(raw.item.to_numpy()[rows['train']] == i)[:1], item_col
      ]
      for i in want_items
    ]
    want = [int(i[0]) if len(i) else 1 for i in ids]
    assert a[k, at : at + 3].tolist() == want + [0] * (3 - len(want)), k


def test_process_shares_concatenate_to_the_training_split(ds, tfds_dir):
  shares = [
    load(data_dir=str(tfds_dir), process_index=i, process_count=2)
    for i in range(2)
  ]
  assert [s.num_rows('train') for s in shares] == [40_000, 40_000]
  for key in ('dense', 'sparse'):
    whole = np.concatenate([s.splits['train'][key] for s in shares])
    np.testing.assert_array_equal(whole, ds.splits['train'][key])


def _copy(data_dir, folder):
  shutil.copytree(data_dir / 'movielens-100k', folder)
  return folder


def test_bad_inputs(tmp_path, data_dir):
  with pytest.raises(ConfigError, match='validation_fraction 0.5 and'):
    load(validation_fraction=0.5, test_fraction=0.5)
  with pytest.raises(ValueError, match="argument 'mmoe,x', expected"):
    config.get_config('mmoe,x')
  manual = tmp_path / 'ml'
  kw = dict(manual_dir=str(manual), data_dir=str(tmp_path / 't'))
  with pytest.raises(DataFileNotFound) as err:
    load(**kw)
  message = str(err.value)
  assert '\n' not in message and str(manual / 'u.data') in message
  assert str(manual / 'u.item') in message and config.URL in message
  # An edited u.user is not the registered file.
  _copy(data_dir, manual)
  users = manual / 'u.user'
  users.write_text(users.read_text().replace('|24|M|', '|25|M|', 1))
  with pytest.raises(DataError, match=r'u.user has sha256 \w+, expected'):
    load(**kw)
  # A rating whose user u.user does not list (no sums: any files).
  shutil.copy(data_dir / 'movielens-100k' / 'u.user', users)
  lines = (manual / 'u.data').read_text().splitlines()
  lines[2] = '9999' + lines[2][lines[2].index('\t') :]
  (manual / 'u.data').write_text('\n'.join(lines) + '\n')
  with pytest.raises(DataError) as err:
    load(**kw, sha256={})
  assert str(err.value) == (
    f"{manual / 'u.data'}: row 3 column 'user_id' is '9999', which "
    f'{users} does not list'
  )


def test_the_cache_is_read_again_and_rebuilt_from_the_files(
  tmp_path, ds, data_dir
):
  """The files are known by their sums: the cache is read without them, and
  a damaged one is prepared again once they are back."""
  manual = _copy(data_dir, tmp_path / 'ml')
  kw = dict(manual_dir=str(manual), data_dir=str(tmp_path / 't'))
  first = load(**kw)
  shutil.rmtree(manual)
  again = load(**kw)
  (version,) = (tmp_path / 't' / 'table').glob('movielens_100k-*/1.0.0')
  record = next(version.glob('table-train.array_record*'))
  record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])
  with pytest.raises(DataError, match='the raw files to prepare it again'):
    load(**kw)
  _copy(data_dir, manual)
  rebuilt = load(**kw)
  for loaded in (first, again, rebuilt):
    for key, a in ds.splits['train'].items():
      np.testing.assert_array_equal(loaded.splits['train'][key], a)
