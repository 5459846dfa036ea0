"""Leak-free count features (schema kind 'count', mtl/data/counts.py):
each row's n and smoothed label rates against a double loop over the rows,
labels flipped one by one change only strictly later rows of the same key,
the prepared table's dense columns against the oracle, one-line errors,
and raw rows encoded for prediction as if they continued the log."""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from mtl.data import DATASETS, preprocessing, schema_parse
from mtl.data import counts as cf
from mtl.data import schema as sc
from mtl.errors import ConfigError, DataError

A = 3.0  # prior_strength
FEATURES = {
  'user': {'kind': 'categorical'},
  'price': {'kind': 'dense'},
  'user_rates': {
    'kind': 'count',
    'key': 'user',
    'time': 'ts',
    'labels': ('click', 'rating >= 4'),
    'prior_strength': A,
  },
  'item_n': {'kind': 'count', 'key': 'item', 'time': 'ts'},
}
TASKS = {'click': {'label': 'click'}}


def log(n=160, seed=0) -> pd.DataFrame:
  """Few users and items, many equal times, some missing keys."""
  rng = np.random.default_rng(seed)
  df = pd.DataFrame(
    {
      'user': rng.integers(0, 6, n).astype(float),
      'item': rng.integers(0, 9, n),
      'ts': rng.integers(0, 15, n),
      'price': rng.normal(size=n).round(3),
      'click': rng.integers(0, 2, n),
      'rating': rng.integers(1, 6, n),
    }
  )
  df.loc[[2, 7, 30, 31], 'user'] = np.nan
  df['user'] = df['user'].map(lambda v: None if v != v else f'u{int(v)}')
  return df


def oracle(key, ts, labels, prior, a):
  """float64 [n, 1 + L]: log1p(n) and (sum + a p) / (n + a) by a double
  loop: row j counts for row i when their keys are equal (not missing) and
  ts[j] < ts[i]."""
  m = len(key)
  labels = np.asarray(labels, float).reshape(m, -1)
  out = np.zeros((m, 1 + labels.shape[1]))
  for i in range(m):
    n, s = 0, np.zeros(labels.shape[1])
    for j in range(m):
      if key[i] is not None and key[j] == key[i] and ts[j] < ts[i]:
        n += 1
        s += labels[j]
    out[i] = [np.log1p(n), *((s + a * np.asarray(prior)) / (n + a))]
  return out


def test_past_counts_and_rates_equal_a_double_loop():
  df = log(60)
  labels = np.c_[df.click, df.rating >= 4].astype(np.int64)
  train = np.arange(60) % 5 != 0
  f = sc.Count('r', 'user', 'ts', ('click', 'rating >= 4'), A)
  keys = cf.Keys()  # Factorised chunk by chunk, as the builder reads.
  for part in (df[:25], df[25:26], df[26:]):
    keys.add(cf.keys_of(part, 'user'))
  got = cf.Log(f, keys, df.ts, labels, train)
  prior = labels[train].mean(0)
  np.testing.assert_allclose(got.priors, prior, rtol=0, atol=1e-15)
  want = oracle(list(df.user), df.ts.to_numpy(), labels, prior, A)
  np.testing.assert_allclose(got.values(np.arange(60)), want, rtol=1e-12)
  # Missing keys: n = 0, every rate its prior; a tie counts nothing.
  missing = df.user.isna().to_numpy()
  np.testing.assert_array_equal(got.n[missing], 0)
  first = df.groupby('user').ts.transform('min').to_numpy() == df.ts
  np.testing.assert_array_equal(got.n[first & ~missing], 0)
  assert (got.n > 0).sum() > 30  # The oracle had work to do.


def test_flipping_a_label_changes_only_strictly_later_rows_of_its_key():
  df = log(50, seed=1)
  codes = pd.factorize(df.user)[0]
  labels = df[['click']].to_numpy(np.int64)
  ts = df.ts.to_numpy()
  before = cf.raw_values(*_past(codes, ts, labels), [0.4], A)
  changed = 0
  for r in range(len(df)):
    flipped = labels.copy()
    flipped[r, 0] = 1 - flipped[r, 0]
    after = cf.raw_values(*_past(codes, ts, flipped), [0.4], A)
    moved = (after != before).any(1)
    later = (codes == codes[r]) & (codes[r] >= 0) & (ts > ts[r])
    assert not (moved & ~later).any(), r
    np.testing.assert_array_equal(moved, later)  # and every one of those
    changed += moved.sum()
  assert changed > 50


def _past(codes, ts, labels):
  n, sums = cf.past_counts(codes, ts, labels)
  return n, n, sums


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp('counts')
  df = log()
  df.to_csv(root / 'log.csv', index=False)
  kw = dict(features=FEATURES, tasks=TASKS, data_dir=str(root / 'tfds'))
  ds = DATASETS['table'](path=str(root / 'log.csv'), chunksize=32, **kw)
  return root, df, ds, kw


def split_rows(n):
  order = np.random.default_rng(0).permutation(n)
  n_val = n_test = round(0.1 * n)
  return {
    'validation': np.sort(order[:n_val]),
    'test': np.sort(order[n_val : n_val + n_test]),
    'train': np.sort(order[n_val + n_test :]),
  }


def standardised(raw, train):
  mean, std = raw[train].mean(0), raw[train].std(0)
  return (raw - mean) / np.where(std > 0, std, 1.0)


def test_the_prepared_tables_dense_columns_equal_the_oracle(prepared):
  _, df, ds, _ = prepared
  assert ds.dense_names == (
    'item_n.count',
    'price',
    'user_rates.count',
    'user_rates.click',
    'user_rates.rating >= 4',
  )
  rows = split_rows(len(df))
  train = np.zeros(len(df), bool)
  train[rows['train']] = True
  labels = np.c_[df.click, df.rating >= 4].astype(float)
  # Every split's rows count, as for a history; priors from train only.
  prior = labels[train].mean(0)
  users = oracle(list(df.user), df.ts.to_numpy(), labels, prior, A)
  items = oracle(
    list(df.item), df.ts.to_numpy(), np.zeros((len(df), 0)), [], 10
  )
  want = np.c_[standardised(items, train), standardised(users, train)]
  for split, r in rows.items():
    got = ds.splits[split]['dense']
    np.testing.assert_allclose(got[:, [0, 2, 3, 4]], want[r], atol=2e-6)


def test_a_test_rows_flipped_labels_move_only_later_rows_of_its_user(
  prepared, tmp_path
):
  root, df, ds, kw = prepared
  rows = split_rows(len(df))
  r = next(i for i in rows['test'] if df.user[i] is not None)
  flipped = df.copy()
  flipped.loc[r, 'click'] = 1 - flipped.click[r]
  flipped.loc[r, 'rating'] = 6 - flipped.rating[r]  # Across 'rating >= 4'.
  flipped.to_csv(tmp_path / 'log.csv', index=False)
  other = DATASETS['table'](path=str(tmp_path / 'log.csv'), chunksize=32, **kw)
  later = (df.user == df.user[r]).to_numpy() & (df.ts > df.ts[r]).to_numpy()
  # The standardisation's training moments move with the later training
  # rows: compare the raw values (a rate moves by >= 1 / (n + a) > 5e-3).
  for split, at in rows.items():
    a, b = unstandardised(ds, split), unstandardised(other, split)
    moved = ~np.isclose(a, b, rtol=0, atol=1e-4).all(1)
    np.testing.assert_array_equal(moved, later[at])
  assert later[rows['train']].any()


def unstandardised(ds, split):
  """The raw user_rates columns of a prepared split."""
  path = pathlib.Path(ds.stats['prepared_dir']) / 'metadata.json'
  moments = json.loads(path.read_text())['counts']['user_rates']['moments']
  x = ds.splits[split]['dense'].astype(np.float64)
  names = ds.dense_names
  return np.stack(
    [
      x[:, names.index(n)] * moments[n]['std'] + moments[n]['mean']
      for n in cf.outputs(
        sc.Count('user_rates', 'u', 't', ('click', 'rating >= 4'))
      )
    ],
    1,
  )


def test_the_stream_row_files_hold_the_count_columns(prepared):
  from mtl.data import streaming

  root, df, ds, kw = prepared
  kwargs = {**kw, 'path': str(root / 'log.csv'), 'chunksize': 32}
  stream = streaming.load_streaming(kwargs)
  assert stream.dense_names == ds.dense_names
  for split in ('train', 'test'):
    rows = streaming.row_file(stream, split)
    got = rows.read(0, rows.num_rows)['dense']
    np.testing.assert_array_equal(got, ds.splits[split]['dense'])


def test_given_rows_continue_the_log(prepared, tmp_path):
  root, df, ds, kw = prepared
  # A run's preprocessing.json, then later rows (a new user, an empty key).
  art = preprocessing.artefact('table', kw, ds)
  new = log(40, seed=2)
  new['ts'] += 15
  new.loc[3, 'user'] = 'u99'
  path = tmp_path / 'new.csv'
  new.to_csv(path, index=False)
  enc = preprocessing.Encoder(art)
  got = enc.features(new.iloc[20:].astype(str), 20, path)['dense']
  # The oracle: the whole log then the given rows, the log's moments.
  both = pd.concat([df, new], ignore_index=True)
  labels = np.c_[both.click, both.rating >= 4].astype(float)
  train = np.zeros(len(both), bool)
  train[split_rows(len(df))['train']] = True
  prior = labels[train].mean(0)
  ts = both.ts.to_numpy()
  users = oracle(list(both.user), ts, labels, prior, A)
  raw = users[len(df) + 20 :]
  want = (raw - users[train].mean(0)) / users[train].std(0)
  np.testing.assert_allclose(got[:, 2:], want, atol=2e-6)
  # Without label columns the given rows count in n, not in the rates.
  enc = preprocessing.Encoder(art)
  frame = new[['user', 'item', 'ts', 'price']].astype(str)
  got = enc.features(frame, 0, 'rows')['dense']
  np.testing.assert_allclose(got[:, 2], want_n(df, new, users, train))


def want_n(df, new, users, train):
  """Standardised log1p(n) of the given rows over log + given rows."""
  both = pd.concat([df, new], ignore_index=True)
  n = oracle(
    list(both.user), both.ts.to_numpy(), np.zeros((len(both), 0)), [], 1
  )
  mean, std = users[train, 0].mean(), users[train, 0].std()
  return (n[len(df) :, 0] - mean) / std


def test_a_history_the_given_rows_lack_continues_the_log(tmp_path):
  df = log(120, seed=3).assign(user=lambda d: d.user.fillna('u0'))
  df.to_csv(tmp_path / 'log.csv', index=False)
  features = {
    'item': {'kind': 'categorical'},
    'hist': {'kind': 'history', 'user': 'user', 'item': 'item', 'time': 'ts',
             'max_len': 3},
  }  # fmt: skip
  kw = dict(features=features, tasks=TASKS, data_dir=str(tmp_path / 'tfds'))
  ds = DATASETS['table'](path=str(tmp_path / 'log.csv'), **kw)
  enc = preprocessing.Encoder(preprocessing.artefact('table', kw, ds))
  new = log(40, seed=4)
  new['ts'] += 15
  new.loc[4, 'user'] = 'u77'  # New to the log; rows 2, 7 have no user.
  path = tmp_path / 'new.csv'
  new[['user', 'item', 'ts']].to_csv(path, index=False)
  enc.check_columns(['user', 'item', 'ts'], path, labels=False)
  got = enc.features(new.iloc[10:].astype(str), 10, path)['sparse'][:, :3]
  # The oracle: the items of the user's rows before, log then given rows.
  both = pd.concat([df, new], ignore_index=True)
  train = both.iloc[split_rows(len(df))['train']]
  vocab = sorted(train.item.astype(str).unique())
  for k, i in enumerate(range(len(df) + 10, len(both))):
    row = both.iloc[i]
    earlier = both[(both.user == row.user) & (both.ts < row.ts)]
    earlier = earlier.assign(at=earlier.index).sort_values(['ts', 'at'])
    ids = [vocab.index(v) + 2 if v in vocab else 1 for v in
           earlier.item.astype(str)][-3:]  # fmt: skip
    assert got[k].tolist() == ids + [0] * (3 - len(ids)), i
  assert (got > 0).sum() > 40


@pytest.mark.parametrize(
  'edit, message',
  [
    (
      {'key': 'usr'},
      "dataset.features.user_rates.key reads column 'usr', which",
    ),
    ({'labels': ('rating',)}, "row 1 column 'rating' is 5, expected 0 or 1"),
    (
      {'time': 'gap'},
      "row 6 column 'gap' is empty, expected a finite number "
      '(dataset.features.user_rates.time)',
    ),
  ],
)
def test_bad_columns_are_one_line_errors_naming_feature_and_key(
  tmp_path, edit, message
):
  df = log(40)
  df['gap'] = df.ts.astype(float)
  df.loc[5, 'gap'] = np.nan
  df.to_csv(tmp_path / 'log.csv', index=False)
  features = {k: dict(v) for k, v in FEATURES.items()}
  features['user_rates'].update(edit)
  with pytest.raises(DataError) as e:
    DATASETS['table'](
      path=str(tmp_path / 'log.csv'),
      features=features,
      tasks=TASKS,
      data_dir=str(tmp_path / 'tfds'),
    )
  text = str(e.value)
  assert message in text and '\n' not in text
  assert 'dataset.features.user_rates.' in text


@pytest.mark.parametrize(
  'entry, message',
  [
    ({'key': 'u'}, "is missing key 'time'"),
    ({'key': 'u', 'time': 't', 'prior_strength': 0}, 'expected a number > 0'),
    ({'key': 'u', 'time': 't', 'labels': ('y', 'y')}, 'distinct labels'),
    ({'key': 'u', 'time': 't', 'labels': ('y >= x',)}, 'is not a number'),
    ({'key': 'u', 'time': 't', 'window': 3}, "unknown key 'window'"),
  ],
)
def test_bad_entries_are_config_errors(entry, message):
  with pytest.raises(ConfigError, match=message) as e:
    schema_parse.parse({'c': {'kind': 'count', **entry}}, {'y': {'label': 'y'}})
  assert str(e.value).startswith('dataset.features.c')
