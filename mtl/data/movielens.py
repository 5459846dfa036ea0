"""MovieLens 100K as a two-task `Dataset`, an instance of the `table` path.

Source: GroupLens MovieLens 100K (F. M. Harper and J. A. Konstan, "The
MovieLens Datasets: History and Context", ACM TiiS 2015; research use, no
redistribution): u.data (user, item, rating 1-5, timestamp; tab-separated),
u.user (id|age|gender|occupation|zip), u.item (id|title|release date|video
release date|IMDb URL|19 genre flags; latin-1), u.genre and u.occupation,
as GroupLens publishes them (sha256 in movielens_100k_checksums.tsv).

The ratings are joined with their user and item once, into one
tab-separated file under `data_dir` (movielens_100k/joined-1/ratings.tsv,
streamed in chunks, a row per u.data line in its order), and that file is
prepared by the generic `table` dataset (table.py) with the schema below:
no builder of its own. Later loads need neither the raw files nor the join.

Tasks (mask 1 everywhere), rating first:
  'rating' (regression): the 1-5 star rating, CENTRED by default on the mean
    training rating (stats['rating_mean'], about 3.53), so that a head
    starting at 0 starts at the mean; `center_rating=False` keeps 1-5.
  'like' (binary): rating >= 4 (55,375 of the 100,000 ratings).

Features, vocabularies and moments from the training ratings only (table
ids: 0 padding, 1 out of vocabulary, 2.. the sorted values):
  categorical user_id, item_id, age_bucket (MovieLens-1M's groups: under
  18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+), gender, occupation and
  zip_prefix (the zip code's first character); dense the 19 genre flags
  (0/1, as they are) and release_year (standardised; the one item without a
  date gets the mean, 0); with `history_len` > 0 also each user's history
  of previously rated movies (strictly earlier timestamps, the latest
  `history_len`), pooled with the item ids' table.

Split: a seeded random split of the ratings (numpy default_rng(split_seed)
permutation: validation, then test, the rest train; 80 / 10 / 10 % by
default). A multi-host run passes `process_index` / `process_count`.
"""

import hashlib
import os
import pathlib

import numpy as np
import pandas as pd
from tensorflow_datasets.core import constants

from mtl.data import csv_builder as cb
from mtl.data import prepared
from mtl.data.dataset import Dataset
from mtl.data.table import load_table
from mtl.errors import ConfigError

DataError = cb.DataError
RawFilesMissingError = cb.RawFilesMissingError

NAME = 'movielens_100k'
FOLDER = 'movielens-100k'
URL = 'https://files.grouplens.org/datasets/movielens/ml-100k/'
FILES = ('u.data', 'u.user', 'u.item', 'u.genre', 'u.occupation')
CHECKSUMS = pathlib.Path(__file__).with_name('movielens_100k_checksums.tsv')
GENRES = tuple(
  "unknown Action Adventure Animation Children's Comedy Crime Documentary "
  'Drama Fantasy Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War '
  'Western'.split()
)
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_BUCKETS = ('under 18', '18-24', '25-34', '35-44', '45-49', '50-55', '56+')
RATINGS = ('user_id', 'item_id', 'rating', 'timestamp')
USER = ('age_bucket', 'gender', 'occupation', 'zip_prefix')
ITEM = tuple(f'genre_{g}' for g in GENRES) + ('release_year',)
JOINED = pathlib.Path(NAME) / 'joined-1' / 'ratings.tsv'
# The joined file's modification time, fixed so that every process and
# run describes it alike (the table cache is keyed by path, size and time).
_MTIME_NS = 10**18


def registered() -> dict[str, tuple[int, str]]:
  """{file: (size, sha256)} of movielens_100k_checksums.tsv."""
  out = {}
  for line in CHECKSUMS.read_text().splitlines():
    url, size, sha, _ = line.split('\t')
    out[url.rsplit('/', 1)[1]] = (int(size), sha)
  return out


def how_to_get() -> str:
  """Where the raw files come from, for error messages."""
  files = ', '.join(
    f'{name} ({size:,} bytes, sha256 {sha[:16]}...)'
    for name, (size, sha) in registered().items()
  )
  return (
    f'download {files} from {URL} (or unzip '
    'https://files.grouplens.org/datasets/movielens/ml-100k.zip; GroupLens '
    'terms: research use, no redistribution)'
  )


def schema(center_rating: bool, history_len: int) -> tuple[dict, dict]:
  """(features, tasks) of the joined file for table.py."""
  features = {n: {'kind': 'categorical'} for n in ('user_id', 'item_id')}
  features.update({n: {'kind': 'categorical'} for n in USER})
  features.update({n: {'kind': 'dense', 'normalize': 'none'} for n in ITEM})
  features['release_year'] = {'kind': 'dense', 'missing': 'mean'}
  if history_len:
    features['history'] = {
      'kind': 'history',
      'user': 'user_id',
      'item': 'item_id',
      'time': 'timestamp',
      'max_len': history_len,
    }
  scale = 'center' if center_rating else 'none'
  tasks = {
    'rating': {'label': 'rating', 'kind': 'regression', 'scale': scale},
    'like': {'label': 'rating >= 4'},
  }
  return features, tasks


def _check_raw(manual: pathlib.Path) -> dict[str, pathlib.Path]:
  paths = {name: manual / name for name in FILES}
  missing = [str(p) for p in paths.values() if not p.is_file()]
  if missing:
    raise RawFilesMissingError(
      f'{NAME}: raw file(s) not found: {", ".join(missing)}; '
      f'{how_to_get()} into {manual}, or pass manual_dir= (or set '
      f'$MTL_DATA_DIR to a folder holding {FOLDER}/)'
    )
  for name, (size, sha) in registered().items():
    found = hashlib.sha256(paths[name].read_bytes()).hexdigest()
    if found != sha:
      raise DataError(
        f'{NAME}: a raw file in {manual} is not the registered file: '
        f'{name} has sha256 {found}, expected {sha} ({size:,} bytes)'
      )
  return paths


def _table(path, names) -> pd.DataFrame:
  """A small '|'-separated latin-1 table, every value a string."""
  frame = pd.read_csv(
    path, sep='|', header=None, dtype=str, keep_default_na=False,
    encoding='latin-1',
  )  # fmt: skip
  if frame.shape[1] != len(names):
    raise DataError(
      f'{path}: has {frame.shape[1]} columns, expected {len(names)} '
      f'({"|".join(names)})'
    )
  frame.columns = names
  return frame


def read_tables(paths: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
  """(users, items): the joined columns, indexed by the raw id's text."""
  users = _table(paths['u.user'], ('id', 'age', 'gender', 'occupation', 'zip'))
  items = _table(
    paths['u.item'], ('id', 'title', 'release', 'video', 'url') + GENRES
  )
  listed = _table(paths['u.genre'], ('genre', 'index'))
  if list(listed['genre']) != list(GENRES):
    raise DataError(
      f'{paths["u.genre"]}: lists {list(listed["genre"])}, expected the 19 '
      f'MovieLens 100K genres {GENRES}'
    )
  age = cb.column(users, 'age', 0, paths['u.user'], 'id')
  user = pd.DataFrame(
    {
      'age_bucket': np.array(AGE_BUCKETS)[
        np.searchsorted(AGE_EDGES, age, side='right')
      ],
      'gender': users['gender'],
      'occupation': users['occupation'],
      'zip_prefix': users['zip'].str[:1],
    }
  ).set_axis(users['id'], axis=0)
  year = pd.to_datetime(items['release'], format='%d-%b-%Y', errors='coerce')
  item = items[list(GENRES)].set_axis([f'genre_{g}' for g in GENRES], axis=1)
  item = item.assign(release_year=year.dt.year.astype('Int64').astype(str))
  item['release_year'] = item['release_year'].replace('<NA>', '')
  return user.astype(str), item.set_axis(items['id'], axis=0)


def write_joined(paths: dict, out: pathlib.Path, chunksize: int) -> None:
  """u.data joined with u.user and u.item, streamed into `out` (TSV)."""
  user, item = read_tables(paths)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f'.{out.name}.{os.getpid()}')
  reader = cb.read_chunks(
    paths['u.data'], chunksize=chunksize, sep='\t', header=None,
    names=list(RATINGS),
  )  # fmt: skip
  try:
    with open(tmp, 'w', encoding='utf-8') as f:
      _join_into(f, reader, paths['u.data'], user, item)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  os.utime(tmp, ns=(_MTIME_NS, _MTIME_NS))
  tmp.replace(out)


def _join_into(f, reader, path, user, item) -> None:
  """Writes each chunk of u.data joined with its user and item rows."""
  for start, chunk in reader:
    rating = cb.column(chunk, 'rating', start, path, 'id')
    bad = ~np.isin(rating, np.arange(1, 6))
    if bad.any():
      i = int(np.argmax(bad))
      raise DataError(
        f'{path}: row {start + i + 1} column rating is '
        f'{rating[i]}, expected an integer 1-5'
      )
    parts = [chunk]
    for key, table in (('user', user), ('item', item)):
      ids = chunk[f'{key}_id'].astype(str)
      at = table.index.get_indexer(ids)
      if (at < 0).any():
        i = int(np.argmax(at < 0))
        raise DataError(
          f'{path}: row {start + i + 1} column {key}_id is '
          f'{ids.iloc[i]}, which u.{key} does not list'
        )
      parts.append(table.iloc[at].reset_index(drop=True))
    joined = pd.concat([p.reset_index(drop=True) for p in parts], axis=1)
    joined.to_csv(f, sep='\t', index=False, header=start == 0)


def load_movielens_100k(
  *,
  validation_fraction: float = 0.1,
  test_fraction: float = 0.1,
  split_seed: int = 0,
  center_rating: bool = True,
  history_len: int = 0,
  manual_dir: str | os.PathLike | None = None,
  data_dir: str | os.PathLike | None = None,
  chunksize: int = cb.DEFAULT_CHUNKSIZE,
  process_index: int = 0,
  process_count: int = 1,
) -> Dataset:
  """Loads MovieLens 100K as train / validation / test splits.

  Args:
    validation_fraction, test_fraction: shares of the ratings; the rest is
      train.
    split_seed: seed of the random split of the ratings.
    center_rating: subtract the mean training rating from the rating label.
    history_len: each user's previously rated movies as a feature, the
      latest this many (0: none).
    manual_dir: folder holding u.data, u.user, u.item, u.genre and
      u.occupation; default $MTL_DATA_DIR/movielens-100k. Only read when
      the joined file is not there yet.
    data_dir: TFDS data directory for the joined file and the prepared
      cache; default TFDS's.
    chunksize: rows per read and per prepared record when preparing.
    process_index, process_count: this process's share of the train rows.

  Raises:
    ConfigError: a bad keyword.
    DataError: a raw file that is not the registered one or is malformed,
      or a feature that leaks a label (RawFilesMissingError, also a
      FileNotFoundError: a raw file is missing).
  """
  fractions = (validation_fraction, test_fraction)
  if not (min(fractions) > 0 and sum(fractions) < 1):
    raise ConfigError(
      f'{NAME}: validation_fraction {validation_fraction!r} and '
      f'test_fraction {test_fraction!r}, expected positive numbers with a '
      'sum below 1'
    )
  if isinstance(history_len, bool) or not isinstance(history_len, int):
    raise ConfigError(
      f'{NAME}: history_len is {history_len!r}, expected an int'
    )
  if history_len < 0:
    raise ConfigError(f'{NAME}: history_len is {history_len}, expected >= 0')
  root = pathlib.Path(data_dir or constants.DATA_DIR).expanduser()
  joined = root / JOINED
  if not joined.is_file() and process_index == 0:
    manual = prepared.manual_dir(NAME, manual_dir, FOLDER, how_to_get())
    write_joined(_check_raw(manual), joined, chunksize)
  features, tasks = schema(center_rating, history_len)
  ds = load_table(
    path=str(joined),
    file_format='tsv',
    features=features,
    tasks=tasks,
    task_order=('rating', 'like'),
    split='random',
    validation_fraction=float(validation_fraction),
    test_fraction=float(test_fraction),
    split_seed=int(split_seed),
    name=NAME,
    data_dir=data_dir,
    chunksize=chunksize,
    process_index=process_index,
    process_count=process_count,
  )
  ds.stats.update(
    split=dict(zip(('validation', 'test'), fractions, strict=True)),
    split_seed=split_seed,
    center_rating=center_rating,
    rating_mean=ds.stats['label_normalisers']['rating']['mean'],
  )
  return ds
