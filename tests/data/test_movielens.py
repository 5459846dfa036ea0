"""Tests for the MovieLens 100K loader (mtl/data/movielens.py), an instance of
the `table` path.

The raw u.* files are read here with pandas as the oracle: the split is the
documented numpy permutation of the u.data lines, every expected feature
and label is computed from the raw tables joined by pandas.
"""

import shutil

import numpy as np
import pandas as pd
import pytest

from mtl.data import movielens
from mtl.errors import ConfigError, DataError


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return tmp_path_factory.getbasetemp() / 'tfds-shared'


@pytest.fixture(scope='module')
def ds(tfds_dir, data_dir):
  return movielens.load_movielens_100k(data_dir=tfds_dir)


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
  assert len(ds.dense_names) == 20 and len(ds.sparse_names) == 6
  assert [(t.name, t.kind) for t in ds.tasks] == [
    ('rating', 'regression'),
    ('like', 'binary'),
  ]


def test_labels_match_u_data(ds, raw, rows):
  mean = raw['rating'].iloc[rows['train']].mean()
  assert ds.stats['rating_mean'] == pytest.approx(mean)
  for split, r in rows.items():
    rating = raw['rating'].to_numpy()[r]
    labels = ds.splits[split]['labels']
    np.testing.assert_allclose(labels[0], rating - mean, atol=1e-5)
    np.testing.assert_array_equal(labels[1], rating >= 4)
  likes = sum(ds.splits[s]['labels'][1].sum() for s in rows)
  assert likes == (raw['rating'] >= 4).sum() == 55_375


def test_uncentred_rating(tfds_dir, raw, rows):
  ds = movielens.load_movielens_100k(data_dir=tfds_dir, center_rating=False)
  np.testing.assert_array_equal(
    ds.splits['test']['labels'][0], raw['rating'].to_numpy()[rows['test']]
  )


def test_sparse_features_use_training_vocabularies(ds, raw, rows):
  age = pd.cut(
    raw['age'],
    [0, 18, 25, 35, 45, 50, 56, 200],
    right=False,
    labels=movielens.AGE_BUCKETS,
  ).astype(str)
  columns = {
    'user_id': raw['user'],
    'item_id': raw['item'],
    'age_bucket': age,
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
  year = pd.to_datetime(raw['release'], format='%d-%b-%Y').dt.year
  train_year = year.iloc[rows['train']]
  standard = ((year - train_year.mean()) / train_year.std(ddof=0)).fillna(0)
  genre_of = {f'genre_{g}': 5 + i for i, g in enumerate(movielens.GENRES)}
  for split, r in rows.items():
    dense = ds.splits[split]['dense']
    for j, name in enumerate(ds.dense_names[:-1]):
      np.testing.assert_array_equal(dense[:, j], raw[genre_of[name]].iloc[r])
    np.testing.assert_allclose(dense[:, -1], standard.to_numpy()[r], atol=1e-5)
  assert ds.dense_names[-1] == 'release_year'
  assert "genre_Children's" in ds.dense_names


def test_history_of_previously_rated_movies(tfds_dir, raw, rows):
  ds = movielens.load_movielens_100k(data_dir=tfds_dir, history_len=3)
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
    movielens.load_movielens_100k(
      data_dir=tfds_dir, process_index=i, process_count=2
    )
    for i in range(2)
  ]
  assert [s.num_rows('train') for s in shares] == [40_000, 40_000]
  for key in ('dense', 'sparse'):
    whole = np.concatenate([s.splits['train'][key] for s in shares])
    np.testing.assert_array_equal(whole, ds.splits['train'][key])
  whole = np.concatenate([s.splits['train']['labels'] for s in shares], 1)
  np.testing.assert_array_equal(whole, ds.splits['train']['labels'])
  np.testing.assert_array_equal(
    shares[1].splits['test']['sparse'], ds.splits['test']['sparse']
  )


def test_bad_inputs(tmp_path, data_dir):
  with pytest.raises(ConfigError) as err:
    movielens.load_movielens_100k(validation_fraction=0.5, test_fraction=0.5)
  assert str(err.value) == (
    'movielens_100k: validation_fraction 0.5 and test_fraction 0.5, '
    'expected positive numbers with a sum below 1'
  )
  manual = tmp_path / 'ml'
  with pytest.raises(FileNotFoundError) as err:
    movielens.load_movielens_100k(manual_dir=manual, data_dir=tmp_path / 't')
  message = str(err.value)
  assert '\n' not in message and str(manual / 'u.data') in message
  assert movielens.URL in message and 'ml-100k.zip' in message
  # A rating of 6 in an otherwise registered-looking file: checksum first.
  manual.mkdir()
  for name in movielens.FILES:
    (manual / name).write_bytes(
      (data_dir / 'movielens-100k' / name).read_bytes()
    )
  lines = (manual / 'u.data').read_text().splitlines()
  lines[2] = lines[2].replace('\t1\t', '\t6\t')
  (manual / 'u.data').write_text('\n'.join(lines) + '\n')
  with pytest.raises(DataError, match='is not the registered file') as err:
    movielens.load_movielens_100k(manual_dir=manual, data_dir=tmp_path / 't')
  assert '\n' not in str(err.value)
  paths = {name: manual / name for name in movielens.FILES}
  with pytest.raises(DataError) as err:
    movielens.write_joined(paths, tmp_path / 'j.tsv', 1000)
  assert str(err.value) == (
    f'{manual / "u.data"}: row 3 column rating is 6, expected an integer 1-5'
  )
  assert not (tmp_path / 'j.tsv').exists()


def test_a_damaged_cache_is_prepared_again_from_the_joined_file(
  tmp_path, ds, tfds_dir
):
  # The joined file alone (no raw files) prepares the cache, and again
  # when the cache is damaged.
  shutil.copytree(tfds_dir / 'movielens_100k', tmp_path / 'movielens_100k')
  first = movielens.load_movielens_100k(data_dir=tmp_path, manual_dir='/no')
  (version,) = (tmp_path / 'table').glob('movielens_100k-*/1.0.0')
  record = next(version.glob('table-train.array_record*'))
  record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])
  again = movielens.load_movielens_100k(data_dir=tmp_path, manual_dir='/no')
  for loaded in (first, again):
    for key, a in ds.splits['train'].items():
      np.testing.assert_array_equal(loaded.splits['train'][key], a)
