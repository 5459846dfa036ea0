"""Depth labels from sessions: schema kind 'session',
table_plan.sessions, and a watch-time task of kind weighted_logistic.

Oracles: a hand-made log with its sessions worked out by hand, and for a
prepared table a brute-force loop over each user's rows in time order.
"""

import json

import numpy as np
import pandas as pd
import pytest

from mtl import serving
from mtl.data import DATASETS, preprocessing, schema_parse, table_plan
from mtl.errors import ConfigError, DataError


def test_sessions_of_a_hand_made_log():
  # user a: t 0, 10, 20 | gap 100 | 120, 125 ; user b: 5 | 500, 500 (a tie:
  # by row). Rows are given out of order; gap threshold 30 (> 30 splits).
  users = np.array([0, 1, 0, 0, 1, 0, 0, 1])
  time = np.array([10, 5, 0, 120, 500, 20, 125, 500])
  continues, remaining = table_plan.sessions(users, time, gap=30)
  # a's sessions: rows 2 (t0), 0 (t10), 5 (t20) | 3 (t120), 6 (t125)
  # b's: row 1 (t5) | rows 4, 7 (t500, t500)
  want_remaining = {2: 2, 0: 1, 5: 0, 3: 1, 6: 0, 1: 0, 4: 1, 7: 0}
  assert remaining.tolist() == [want_remaining[i] for i in range(8)]
  assert continues.tolist() == [int(want_remaining[i] > 0) for i in range(8)]
  # A gap of exactly the threshold does not split (only above it does).
  _, r = table_plan.sessions(np.zeros(3, int), np.array([0, 30, 60]), gap=30)
  assert r.tolist() == [2, 1, 0]


def brute_force(df, gap):
  """{row: (continues, remaining)} by walking each user's rows."""
  out = {}
  for _, g in df.groupby('user'):
    g = g.sort_values('ts', kind='stable')
    rows, ts = list(g.index), list(g.ts)
    session = [[rows[0]]]
    for k in range(1, len(rows)):
      if ts[k] - ts[k - 1] > gap:
        session.append([])
      session[-1].append(rows[k])
    for s in session:
      for j, row in enumerate(s):
        out[row] = (int(j < len(s) - 1), len(s) - 1 - j)
  return out


def test_prepared_depth_labels_and_weighted_watch_time(tmp_path):
  rng = np.random.default_rng(0)
  n = 240
  steps = rng.choice([1, 1, 2, 3, 60], n)
  df = pd.DataFrame(
    {
      'user': rng.integers(0, 2, n),
      'rowid': np.arange(n),  # an input that names the row
      'ts': np.cumsum(steps),
      'play': np.where(rng.random(n) < 0.4, rng.exponential(30, n), 0).round(2),
    }
  )
  df.to_csv(tmp_path / 'log.csv', index=False)
  kwargs = dict(
    path=str(tmp_path / 'log.csv'),
    features={
      'user': {'kind': 'categorical'},
      'rowid': {'kind': 'dense', 'normalize': 'none'},
      's': {'kind': 'session', 'user': 'user', 'time': 'ts', 'gap': 20},
    },
    tasks={
      'goes_on': {'label': 's.continues'},
      'depth': {'label': 's.remaining', 'kind': 'regression'},
      'deep': {'label': 's.remaining >= 2'},
      'watch': {'label': 'play', 'kind': 'weighted_logistic'},
    },
    task_order=('goes_on', 'depth', 'deep', 'watch'),
  )
  ds = DATASETS['table'](
    **kwargs, data_dir=str(tmp_path / 'tfds'), chunksize=64
  )
  assert ds.sparse_names == ('user',) and ds.dense_names == ('rowid',)
  assert [t.kind for t in ds.tasks] == [
    'binary',
    'regression',
    'binary',
    'weighted_logistic',
  ]
  want = brute_force(df, 20)
  seen = 0
  for split in ('train', 'validation', 'test'):
    a = ds.splits[split]
    for k, row in enumerate(a['dense'][:, 0].astype(int)):
      goes_on, remaining = want[row]
      assert a['labels'][:, k].tolist() == pytest.approx(
        [goes_on, remaining, float(remaining >= 2), df.play[row]], rel=1e-5
      )
      seen += 1
  assert seen == n
  assert 0.3 < np.mean([c for c, _ in want.values()]) < 0.9
  # Given rows (mtl-predict, serving) encode as training did: a session
  # derives labels only, so a row brings its user and rowid, no time.
  artefact = json.loads(
    json.dumps(preprocessing.artefact('table', kwargs, ds), sort_keys=True)
  )
  train = ds.splits['train']
  rows = df.loc[train['dense'][:, 0].astype(int), ['user', 'rowid']]
  x = serving.encode_frame(preprocessing.Encoder(artefact), rows)
  np.testing.assert_array_equal(x['sparse'], train['sparse'])
  np.testing.assert_array_equal(x['dense'], train['dense'])


def test_session_schema_errors():
  base = {'user': {'kind': 'categorical'}}
  bad = {**base, 's': {'kind': 'session', 'user': 'user', 'time': 't'}}
  bad['s']['gap'] = 0
  with pytest.raises(ConfigError, match='gap is 0'):
    schema_parse.parse(bad, {'y': {'label': 's.continues'}})
  bad['s'].pop('gap')
  bad['s']['column'] = 'x'
  with pytest.raises(ConfigError, match="unknown key 'column'"):
    schema_parse.parse(bad, {'y': {'label': 's.continues'}})
  with pytest.raises(ConfigError, match="scale is 'center'"):
    schema_parse.parse(
      base,
      {'w': {'label': 'p', 'kind': 'weighted_logistic', 'scale': 'center'}},
    )
  ok = {**base, 's': {'kind': 'session', 'user': 'user', 'time': 't'}}
  schema = schema_parse.parse(ok, {'y': {'label': 's.continues'}})
  assert schema.columns() == ('user', 't')  # derived columns not read
  assert schema.derived() == ('s.continues', 's.remaining')


def test_negative_watch_time_is_a_data_error(tmp_path):
  df = pd.DataFrame(
    {'user': [1, 2, 1, 2] * 5, 'play': [0, 3, -1, 2] * 5, 'ts': range(20)}
  )
  df.to_csv(tmp_path / 'w.csv', index=False)
  with pytest.raises(DataError, match="column 'play' is -1, expected a wat"):
    DATASETS['table'](
      path=str(tmp_path / 'w.csv'),
      features={'user': {'kind': 'categorical'}},
      tasks={'w': {'label': 'play', 'kind': 'weighted_logistic'}},
      data_dir=str(tmp_path / 'tfds'),
    )
