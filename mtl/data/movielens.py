"""MovieLens 100K as a two-task `Dataset`: rating regression and like.

Source: GroupLens MovieLens 100K (Harper and Konstan, ACM TiiS 2015), the
complete 100,000 ratings of 943 users on 1,682 items (movielens_builder.py
says how the files are read and encoded).

Tasks (mask 1 everywhere):
  'rating' (regression): the 1-5 star rating, CENTRED by default: minus the
    mean training rating (stats['rating_mean'], about 3.53), so that a
    regression head that starts at 0 starts at the mean and the squared
    error is on the scale of the rating's variance; `center_rating=False`
    keeps the raw 1-5 values.
  'like' (binary): rating >= 4 (about 55 % of ratings).

Features: sparse user_id, item_id, age_bucket, gender, occupation,
zip_prefix; dense 19 genre flags and the standardised release year.

Split: a seeded random split of the ratings (not of users or items), by
default 80 / 10 / 10 % (`validation_fraction`, `test_fraction`,
`split_seed`), decided before vocabularies and normalisers are fitted on the
training ratings; so some items of validation / test are out of vocabulary.

A multi-host run passes `process_index` / `process_count`: each process gets
its contiguous share of the training ratings (validation and test whole).
The label-leakage guard (leakage.py) runs on the training rows returned.

TFDS prepares and caches the encoded data under `data_dir` (default:
$TFDS_DATA_DIR, else ~/tensorflow_datasets), one cache per split setting,
from the raw files in `manual_dir` (default: $MTL_DATA_DIR/movielens-100k).
"""

import os

import numpy as np

from mtl.core.tasks import Task
from mtl.data import csv_builder as cb
from mtl.data import movielens_builder as mlb
from mtl.data import prepared
from mtl.data.dataset import Dataset
from mtl.data.leakage import check_no_label_leakage
from mtl.errors import ConfigError

DataError = cb.DataError
RawFilesMissingError = cb.RawFilesMissingError

NAME = 'movielens_100k'
TASKS = (Task('rating', 'regression'), Task('like', 'binary'))


def how_to_get() -> str:
  """Where the raw files come from, for error messages."""
  infos = mlb.MovieLens100k.url_infos
  files = ', '.join(
    f'{name} ({int(infos[mlb.URL + name].size):,} bytes, sha256 '
    f'{infos[mlb.URL + name].checksum[:16]}...)'
    for name in mlb.FILES
  )
  return (
    f'download {files} from {mlb.URL} (or unzip '
    'https://files.grouplens.org/datasets/movielens/ml-100k.zip; GroupLens '
    'terms: research use, no redistribution)'
  )


def load_movielens_100k(
  *,
  validation_fraction: float = 0.1,
  test_fraction: float = 0.1,
  split_seed: int = 0,
  center_rating: bool = True,
  manual_dir: str | os.PathLike | None = None,
  data_dir: str | os.PathLike | None = None,
  chunksize: int = cb.DEFAULT_CHUNKSIZE,
  process_index: int = 0,
  process_count: int = 1,
) -> Dataset:
  """Loads MovieLens 100K as train / validation / test splits.

  Args:
    validation_fraction: share of the ratings in validation.
    test_fraction: share of the ratings in test; the rest is train.
    split_seed: seed of the random split of the ratings.
    center_rating: subtract the mean training rating from the rating label.
    manual_dir: folder holding u.data, u.user, u.item, u.genre and
      u.occupation; default $MTL_DATA_DIR/movielens-100k. Only read when
      preparing.
    data_dir: TFDS data directory for the prepared cache; default TFDS's.
    chunksize: rows per pandas read and per prepared record when preparing.
    process_index: this process's index among `process_count`.
    process_count: processes sharing the training rows.

  Returns:
    A Dataset whose stats hold row counts, label means per split,
    vocabulary sizes, the release-year normaliser, the mean training rating
    and this process's share.

  Raises:
    ConfigError: a bad keyword.
    DataError: a malformed raw file, or a feature that leaks
      a label (a RawFilesMissingError, also a FileNotFoundError, if a raw
      file is missing).
  """
  fractions = (validation_fraction, test_fraction)
  if not (min(fractions) > 0 and sum(fractions) < 1):
    raise ConfigError(
      f'{NAME}: validation_fraction {validation_fraction!r} and '
      f'test_fraction {test_fraction!r}, expected positive numbers with a '
      'sum below 1'
    )
  config = mlb.MovieLens100k.config(
    validation_fraction=float(validation_fraction),
    test_fraction=float(test_fraction),
    seed=int(split_seed),
  )

  def make_builder():
    return mlb.MovieLens100k(
      config=config,
      data_dir=data_dir,
      file_format='array_record',
      chunksize=chunksize,
    )

  def read(builder) -> Dataset:
    encoding = builder.info.metadata
    shift = encoding['rating_mean'] if center_rating else 0.0
    raw, share = prepared.read_splits(builder, process_index, process_count)
    splits = {}
    for split, a in raw.items():
      labels = np.stack([a['rating'] - np.float32(shift), a['like']])
      splits[split] = {
        'dense': a['dense'],
        'sparse': a['sparse'],
        'labels': labels.astype(np.float32),
        'mask': np.ones_like(labels, dtype=np.float32),
      }
    task_names = tuple(t.name for t in TASKS)
    check_no_label_leakage(
      **splits['train'],
      feature_names=mlb.DENSE + mlb.SPARSE,
      task_names=task_names,
      where=f'{NAME} train',
    )
    vocab_sizes = tuple(
      len(encoding['vocabularies'][n]) + 1 for n in mlb.SPARSE
    )
    stats = {
      'split': dict(zip(('validation', 'test'), fractions, strict=True)),
      'split_seed': split_seed,
      'center_rating': center_rating,
      'rating_mean': encoding['rating_mean'],
      'prepared_dir': str(builder.data_path),
      'share': share,
      'rows': {s: int(a['labels'].shape[1]) for s, a in splits.items()},
      'label_mean': {
        s: dict(zip(task_names, map(float, a['labels'].mean(1)), strict=True))
        for s, a in splits.items()
      },
      'vocab_sizes': dict(zip(mlb.SPARSE, vocab_sizes, strict=True)),
      'dense_normalisers': {
        'release_year': dict(encoding['dense']['release_year'])
      },
    }
    return Dataset(
      name=NAME,
      tasks=TASKS,
      dense_names=mlb.DENSE,
      sparse_names=mlb.SPARSE,
      vocab_sizes=vocab_sizes,
      splits=splits,
      stats=stats,
    )

  return prepared.load(
    make_builder,
    read,
    name=NAME,
    given_dir=manual_dir,
    folder='movielens-100k',
    files=mlb.FILES,
    how_to_get=how_to_get(),
    process_index=process_index,
  )
