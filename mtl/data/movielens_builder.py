"""TFDS builder for MovieLens 100K: ratings joined with users and items.

Source: GroupLens MovieLens 100K (F. M. Harper and J. A. Konstan, "The
MovieLens Datasets: History and Context", ACM TiiS 2015; research use, no
redistribution): u.data (user, item, rating 1-5, timestamp; tab-separated),
u.user (id|age|gender|occupation|zip), u.item (id|title|release date|video
release date|IMDb URL|19 genre flags; latin-1), u.genre (name|index) and
u.occupation, as GroupLens publishes them (sha256 in
movielens_100k_checksums.tsv).

SPLIT: the 100,000 ratings are split at random, seeded by `seed`, into
train / validation / test: a permutation of the rating rows
(numpy default_rng(seed)) gives the first round(validation_fraction * N)
rows to validation, the next round(test_fraction * N) to test and the rest
to train (80/10/10 by default). The split costs one byte per rating; u.data
is streamed in chunks of `chunksize` rows, the small user and item tables
are read whole.

Encoding, from the TRAINING ratings only:
- sparse [N, 6] int32: user_id, item_id, age_bucket (MovieLens-1M's groups:
  under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+), gender, occupation and
  zip_prefix (the zip code's first character: the US national area 0-9, or
  the letter of a Canadian postal code), each through a vocabulary of the
  values of the training ratings (0: unseen, 1..: sorted values). An item
  rated only outside training gets id 0.
- dense [N, 20] float32: the 19 genre flags (0/1, as they are) and
  release_year, standardised with the training ratings' mean and std; the
  one item without a release date ('unknown', id 267) gets 0, the mean.
- rating [N] float32 (1-5), like [N] int32 (rating >= 4), and row [N],
  the rating's line in u.data (0-based).
The mean training rating is kept in the metadata ('rating_mean').
"""

import pathlib

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from mtl.data import csv_builder as cb

URL = 'https://files.grouplens.org/datasets/movielens/ml-100k/'
FILES = ('u.data', 'u.user', 'u.item', 'u.genre', 'u.occupation')
SPARSE = (
  'user_id',
  'item_id',
  'age_bucket',
  'gender',
  'occupation',
  'zip_prefix',
)
GENRES = tuple(
  "unknown Action Adventure Animation Children's Comedy Crime Documentary "
  'Drama Fantasy Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War '
  'Western'.split()
)
DENSE = tuple(f'genre_{g}' for g in GENRES) + ('release_year',)
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_BUCKETS = ('under 18', '18-24', '25-34', '35-44', '45-49', '50-55', '56+')
RATINGS = ('user_id', 'item_id', 'rating', 'timestamp')
CHECKSUMS = pathlib.Path(__file__).with_name('movielens_100k_checksums.tsv')
SPLITS = ('train', 'validation', 'test')


class MovieLensConfig(tfds.core.BuilderConfig):
  """The random rating split: fractions and seed (they change the cache)."""

  def __init__(self, *, validation_fraction: float, test_fraction: float, seed):
    super().__init__(
      name=f'val{validation_fraction:g}-test{test_fraction:g}-seed{seed}',
      description=f'ratings split at random, seed {seed}',
    )
    self.validation_fraction = validation_fraction
    self.test_fraction = test_fraction
    self.seed = seed


def _table(path, names, sep='|', encoding='latin-1') -> pd.DataFrame:
  """A small '|'-separated table, every value a string."""
  frame = pd.read_csv(
    path,
    sep=sep,
    header=None,
    dtype=str,
    keep_default_na=False,
    encoding=encoding,
  )
  if frame.shape[1] != len(names):
    raise cb.DataError(
      f'{path}: has {frame.shape[1]} columns, expected {len(names)} '
      f'({"|".join(names)})'
    )
  frame.columns = names
  return frame


def read_tables(paths: dict) -> dict[str, dict[str, np.ndarray]]:
  """{'user'|'item': {column: array}}, rows in table order, 'id' the raw id."""
  genres = _table(paths['u.genre'], ('genre', 'index'))
  listed = list(zip(genres['genre'], genres['index'], strict=True))
  if listed != [(g, str(i)) for i, g in enumerate(GENRES)]:
    raise cb.DataError(
      f'{paths["u.genre"]}: lists {listed}, expected the 19 MovieLens 100K '
      f'genres {GENRES} with indices 0..18'
    )
  users = _table(paths['u.user'], ('id', 'age', 'gender', 'occupation', 'zip'))
  items = _table(
    paths['u.item'], ('id', 'title', 'release', 'video', 'url') + GENRES
  )
  occupations = _table(paths['u.occupation'], ('occupation',))['occupation']
  unlisted = ~users['occupation'].isin(occupations)
  if unlisted.any():
    i = int(np.argmax(unlisted.to_numpy()))
    raise cb.DataError(
      f'{paths["u.user"]}: row {i + 1} occupation '
      f'{users["occupation"].iloc[i]!r} is not listed in u.occupation'
    )
  age = cb.column(users, 'age', 0, paths['u.user'], 'id')
  year = pd.to_datetime(items['release'], format='%d-%b-%Y', errors='coerce')
  flags = [cb.column(items, g, 0, paths['u.item'], 'label') for g in GENRES]
  return {
    'user': {
      'id': cb.column(users, 'id', 0, paths['u.user'], 'id'),
      'age_bucket': np.array(AGE_BUCKETS)[
        np.searchsorted(AGE_EDGES, age, side='right')
      ],
      'gender': users['gender'].to_numpy(str),
      'occupation': users['occupation'].to_numpy(str),
      'zip_prefix': users['zip'].str[:1].to_numpy(str),
    },
    'item': {
      'id': cb.column(items, 'id', 0, paths['u.item'], 'id'),
      'release_year': year.dt.year.to_numpy(np.float64),
      'genres': np.stack(flags, axis=1).astype(np.float32),
    },
  }


def split_codes(path, chunksize: int, config) -> np.ndarray:
  """int8 [N]: 0 train, 1 validation, 2 test for each rating row."""
  n = sum(len(c) for _, c in _ratings(path, chunksize, usecols=[0]))
  order = np.random.default_rng(config.seed).permutation(n)
  n_validation = round(config.validation_fraction * n)
  n_test = round(config.test_fraction * n)
  codes = np.zeros(n, np.int8)
  codes[order[:n_validation]] = 1
  codes[order[n_validation : n_validation + n_test]] = 2
  return codes


def _ratings(path, chunksize, **kwargs):
  return cb.read_chunks(
    path, chunksize=chunksize, sep='\t', header=None, **kwargs
  )


def joined_chunks(path, chunksize: int, tables: dict, codes, split: int):
  """Rating chunks of one split, joined with the user and item columns."""
  for start, chunk in _ratings(path, chunksize, names=list(RATINGS)):
    keep = codes[start : start + len(chunk)] == split
    out = {n: cb.column(chunk, n, start, path, 'id') for n in RATINGS[:3]}
    bad = ~np.isin(out['rating'], np.arange(1, 6))
    if bad.any():
      i = int(np.argmax(bad))
      raise cb.DataError(
        f'{path}: row {start + i + 1} column rating is {out["rating"][i]}, '
        'expected an integer 1-5'
      )
    for key in ('user', 'item'):
      table = tables[key]
      at = pd.Index(table['id']).get_indexer(out[f'{key}_id'])
      if (at < 0).any():
        i = int(np.argmax(at < 0))
        raise cb.DataError(
          f'{path}: row {start + i + 1} column {key}_id is '
          f'{out[f"{key}_id"][i]}, which u.{key} does not list'
        )
      out.update({k: a[at] for k, a in table.items() if k != 'id'})
    out['row'] = np.arange(start, start + len(chunk), dtype=np.int64)
    yield {k: a[keep] for k, a in out.items()}


class MovieLens100k(cb.CsvBuilder):
  """MovieLens 100K ratings, joined and encoded with training vocabularies."""

  name = 'movielens_100k'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Streamed, encoded blocks of chunksize rows.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f'{", ".join(FILES)} from {URL} (or ml-100k.zip, unzipped).'
  )
  BUILDER_CONFIGS = [
    MovieLensConfig(validation_fraction=0.1, test_fraction=0.1, seed=0)
  ]
  CHECKSUMS = CHECKSUMS
  DENSE = DENSE
  SPARSE = SPARSE
  LABELS = {'rating': np.float32, 'like': np.int32}

  @classmethod
  def config(cls, **params) -> MovieLensConfig:
    """The config of these parameters (a predefined one if it exists)."""
    new = MovieLensConfig(**params)
    return cls.builder_configs.get(new.name, new)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description='MovieLens 100K ratings with user and item features.',
      features=self._features(),
      homepage='https://grouplens.org/datasets/movielens/100k/',
      metadata=tfds.core.MetadataDict(),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    paths = dl_manager.download({f: URL + f for f in FILES})
    tables = read_tables(paths)
    codes = split_codes(paths['u.data'], self.chunksize, self.builder_config)
    vocabulary, moments = cb.Vocabulary(SPARSE), cb.Moments(DENSE[-1:])
    ratings = cb.Moments(('rating',))
    for chunk in joined_chunks(
      paths['u.data'], self.chunksize, tables, codes, 0
    ):
      vocabulary.update(chunk)
      year = chunk['release_year']
      moments.update(year[np.isfinite(year), None])
      ratings.update(chunk['rating'][:, None].astype(np.float64))
    encoding = {
      'vocabularies': vocabulary.finish(),
      'dense': moments.finish(),
      'rating_mean': ratings.finish()['rating']['mean'],
    }
    self.info.metadata.update(encoding)
    return {
      split: self._generate_examples(
        split_name=split,
        path=paths['u.data'],
        tables=tables,
        codes=codes,
        split=code,
        encoding=encoding,
      )
      for code, split in enumerate(SPLITS)
    }

  def _encoded_chunks(self, path, tables, codes, split, encoding):
    vocabularies = encoding['vocabularies']
    for chunk in joined_chunks(path, self.chunksize, tables, codes, split):
      year = chunk['release_year'][:, None]
      mean = encoding['dense']['release_year']['mean']
      year = cb.standardise(
        np.where(np.isfinite(year), year, mean), encoding['dense'], DENSE[-1:]
      )
      ids = [cb.lookup(chunk[n], vocabularies[n]) for n in SPARSE]
      yield {
        'dense': np.concatenate([chunk['genres'], year], axis=1),
        'sparse': np.stack(ids, axis=1),
        'rating': chunk['rating'].astype(np.float32),
        'like': (chunk['rating'] >= 4).astype(np.int32),
        'row': chunk['row'],
      }
