"""A row is encoded the same way at training, evaluation, prediction and
serving time: the table builder's prepared training split is
the oracle for mtl.data.preprocessing.Encoder (mtl-eval on a file,
mtl-predict) and serving.encode_frame, with the artefact read back from JSON
as preprocessing.json holds it."""

import json

import numpy as np
import pandas as pd
import pytest

from mtl import serving
from mtl.data import encoding, preprocessing
from mtl.data.table import load_table
from mtl.errors import DataError

FEATURES = {
  'user': {'kind': 'categorical'},
  'item': {'kind': 'categorical', 'min_count': 2},
  'zone': {'kind': 'categorical', 'hash_buckets': 16},
  'price': {
    'kind': 'dense',
    'normalize': 'log1p_standard',
    'missing': 'mean',
    'missing_indicator': True,
  },
  'age': {'kind': 'dense'},
  'tags': {'kind': 'sequence', 'max_len': 3},
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


def interactions(n=500, seed=0) -> pd.DataFrame:
  rng = np.random.default_rng(seed)
  df = pd.DataFrame(
    {
      'user': rng.integers(0, 30, n),
      'item': rng.integers(0, 80, n),
      'zone': rng.choice(['n', 's', 'e', 'w', 'x1', 'x2'], n),
      'ts': rng.integers(0, 300, n),
      'price': rng.gamma(2.0, 3.0, n).round(3),
      'age': rng.integers(18, 70, n),
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


def histories(df: pd.DataFrame, max_len: int) -> list[str]:
  """Brute force: each row's user's items strictly before its time (ties by
  row), the last max_len, oldest first, '|'-joined."""
  out = []
  for _, r in df.iterrows():
    earlier = df[(df.user == r.user) & (df.ts < r.ts)]
    earlier = earlier.assign(row=earlier.index).sort_values(['ts', 'row'])
    out.append('|'.join(map(str, earlier.item.tolist()[-max_len:])))
  return out


@pytest.fixture(scope='module')
def table(tmp_path_factory):
  root = tmp_path_factory.mktemp('table')
  df = interactions()
  parts = {'train': df[:350], 'validation': df[350:425], 'test': df[425:]}
  paths = {}
  for name, part in parts.items():
    paths[name] = root / f'{name}.csv'
    part.to_csv(paths[name], index=False)
  kwargs = dict(
    path=str(paths['train']),
    validation_path=str(paths['validation']),
    test_path=str(paths['test']),
    split='files',
    features=FEATURES,
    tasks=TASKS,
    task_order=('click',),
  )
  ds = load_table(**kwargs, data_dir=str(root / 'tfds'))
  artefact = json.loads(
    json.dumps(preprocessing.artefact('table', kwargs, ds), sort_keys=True)
  )
  train = df[:350].copy()
  train['history'] = histories(df, 4)[:350]  # Behaviour of every split.
  rows = root / 'rows.csv'
  train.drop(columns=['ts']).to_csv(rows, index=False)
  return ds, preprocessing.Encoder(artefact), rows, train


def _read(enc, path):
  source = enc.source(path)
  enc.check_columns(source.columns(), path, labels=True)
  ((start, chunk),) = list(source.chunks(10_000, source.columns()))
  return start, chunk


def test_prediction_encodes_as_training(table):
  ds, enc, rows, _ = table
  start, chunk = _read(enc, rows)
  x = enc.features(chunk, start, rows)
  want = ds.splits['train']
  np.testing.assert_array_equal(x['sparse'], want['sparse'])
  np.testing.assert_array_equal(x['dense'], want['dense'])
  y, m = enc.labels_of(chunk, start, rows)
  np.testing.assert_array_equal(y, want['labels'])
  np.testing.assert_array_equal(m, want['mask'])


def test_serving_encodes_as_training(table):
  ds, enc, _, train = table
  frame = train.drop(columns=['ts', 'click', 'buy', 'dwell'])
  x = serving.encode_frame(enc, frame)  # Numbers and NaN, not text.
  np.testing.assert_array_equal(x['sparse'], ds.splits['train']['sparse'])
  np.testing.assert_array_equal(x['dense'], ds.splits['train']['dense'])


def test_unseen_values_get_the_oov_id(table):
  ds, enc, _, train = table
  frame = train.drop(columns=['ts', 'click', 'buy', 'dwell']).iloc[:4].copy()
  frame['item'] = 'never-seen'
  frame['tags'] = 'zzz|a'
  x = serving.encode_frame(enc, frame)
  names = ds.sparse_names
  assert (x['sparse'][:, names.index('item')] == encoding.OOV_ID).all()
  tags = x['sparse'][:, names.index('tags[0]') : names.index('tags[0]') + 3]
  assert (tags[:, 0] == encoding.OOV_ID).all() and (
    tags[:, 1] > encoding.OOV_ID
  ).all()
  assert (tags[:, 2] == encoding.PAD_ID).all()
  # A hashed feature needs no vocabulary: a new zone still hashes.
  frame['zone'] = 'mars'
  zone = serving.encode_frame(enc, frame)['sparse'][:, names.index('zone')]
  want = encoding.FIRST_ID + encoding.stable_hash(['mars'], 16)[0]
  assert (zone == want).all()


def test_missing_and_unknown_columns_are_one_line(table):
  _, enc, _, train = table
  train = train.drop(columns=['ts'])  # Read only to derive the histories.
  with pytest.raises(DataError, match="has no column 'price'"):
    enc.check_columns(train.drop(columns=['price']).columns, 'f', labels=False)
  with pytest.raises(DataError, match="has column 'colour'"):
    enc.check_columns([*train.columns, 'colour'], 'f', labels=False)
