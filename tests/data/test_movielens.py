"""Tests for the MovieLens 100K loader (mtl/data/movielens*.py).

The raw u.* files are read here with pandas as the oracle. Which rating went
to which split is read from the prepared data's `row` field (the rating's
line in u.data); every expected feature and label is computed from the raw
tables.
"""

import numpy as np
import pandas as pd
import pytest

from mtl.data import movielens, prepared
from mtl.data import movielens_builder as mlb


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
def rows(ds, tfds_dir):
  builder = mlb.MovieLens100k(
    config=mlb.MovieLens100k.config(
      validation_fraction=0.1, test_fraction=0.1, seed=0
    ),
    data_dir=tfds_dir,
  )
  return {s: prepared.read_rows(builder, s)['row'] for s in mlb.SPLITS}


def test_split_is_80_10_10_of_all_ratings(ds, rows):
  assert ds.stats['rows'] == {
    'train': 80_000,
    'validation': 10_000,
    'test': 10_000,
  }
  every = np.sort(np.concatenate(list(rows.values())))
  np.testing.assert_array_equal(every, np.arange(100_000))
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
  likes = sum(ds.splits[s]['labels'][1].sum() for s in mlb.SPLITS)
  assert likes == (raw['rating'] >= 4).sum() == 55_375


def test_uncentred_rating(tfds_dir, raw, rows):
  ds = movielens.load_movielens_100k(data_dir=tfds_dir, center_rating=False)
  np.testing.assert_array_equal(
    ds.splits['test']['labels'][0], raw['rating'].to_numpy()[rows['test']]
  )


def test_sparse_features_use_training_vocabularies(ds, raw, rows):
  train = raw.iloc[rows['train']]
  age = pd.cut(
    raw['age'],
    [0, 18, 25, 35, 45, 50, 56, 200],
    right=False,
    labels=mlb.AGE_BUCKETS,
  ).astype(str)
  columns = {
    'user_id': raw['user'],
    'item_id': raw['item'],
    'age_bucket': age,
    'gender': raw['gender'],
    'occupation': raw['occupation'],
    'zip_prefix': raw['zip'].str[0],
  }
  for j, name in enumerate(ds.sparse_names):
    values = columns[name].to_numpy()
    vocab = np.sort(np.unique(values[rows['train']]))
    assert ds.vocab_sizes[j] == len(vocab) + 1, name
    for split, r in rows.items():
      seen = np.isin(values[r], vocab)
      want = np.where(seen, np.searchsorted(vocab, values[r]) + 1, 0)
      np.testing.assert_array_equal(ds.splits[split]['sparse'][:, j], want)
  # Items rated only outside training are out of vocabulary.
  only_held_out = set(raw['item']) - set(train['item'])
  assert only_held_out
  j = ds.sparse_names.index('item_id')
  test_items = raw['item'].to_numpy()[rows['test']]
  oov = ds.splits['test']['sparse'][:, j] == 0
  np.testing.assert_array_equal(oov, np.isin(test_items, list(only_held_out)))
  assert ds.stats['vocab_sizes']['gender'] == 3


def test_dense_features(ds, raw, rows):
  genres = raw[list(range(5, 24))].to_numpy(np.float32)
  year = pd.to_datetime(raw['release'], format='%d-%b-%Y').dt.year
  train_year = year.iloc[rows['train']]
  standard = ((year - train_year.mean()) / train_year.std(ddof=0)).fillna(0)
  for split, r in rows.items():
    dense = ds.splits[split]['dense']
    np.testing.assert_array_equal(dense[:, :19], genres[r])
    np.testing.assert_allclose(dense[:, 19], standard.to_numpy()[r], atol=1e-5)
  assert ds.dense_names[4] == "genre_Children's"


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
  with pytest.raises(ValueError) as err:
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
  assert mlb.URL in message and 'ml-100k.zip' in message
  # A rating of 6 in an otherwise registered-looking file: checksum first.
  manual.mkdir()
  for name in mlb.FILES:
    (manual / name).write_bytes(
      (data_dir / 'movielens-100k' / name).read_bytes()
    )
  lines = (manual / 'u.data').read_text().splitlines()
  lines[2] = lines[2].replace('\t1\t', '\t6\t')
  (manual / 'u.data').write_text('\n'.join(lines) + '\n')
  with pytest.raises(ValueError, match='is not the registered file'):
    movielens.load_movielens_100k(manual_dir=manual, data_dir=tmp_path / 't')
  rows = mlb.joined_chunks(
    manual / 'u.data',
    1000,
    mlb.read_tables(_paths(data_dir)),
    np.zeros(100_000, np.int8),
    0,
  )
  with pytest.raises(ValueError) as err:
    next(rows)
  assert str(err.value) == (
    f'{manual / "u.data"}: row 3 column rating is 6, expected an integer 1-5'
  )


def _paths(data_dir):
  return {name: data_dir / 'movielens-100k' / name for name in mlb.FILES}
