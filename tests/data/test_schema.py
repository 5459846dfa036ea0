"""The feature schema (mtl/data/schema.py, schema_parse.py, encoding.py):
its errors, vocabularies and out-of-vocabulary ids, the stable hash,
sequences, and the behaviour history index (table_plan.Plan) against
brute-force oracles."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mtl.data import (
  conditions,
  encoding,
  feature_kinds,
  schema_checks,
  schema_parse,
  sequences,
  table_files,
  table_plan,
)
from mtl.data.feature_kinds import FEATURE_KINDS
from mtl.data.kinds.base import Rows
from mtl.data.schema import Spec
from mtl.errors import ConfigError, DataError

FEATURES = {
  'user': {'kind': 'categorical'},
  'item': {'kind': 'categorical', 'min_count': 2},
  'age': {'kind': 'dense', 'missing': 'mean'},
}
TASKS = {'click': {'label': 'click'}}


@pytest.mark.parametrize(
  'features, tasks, message',
  [
    ({'a': {'kind': 'dens'}}, TASKS, "kind is 'dens'.*did you mean 'dense'"),
    ({'a': {'kind': 'dense', 'normalise': 'log1p'}}, TASKS, "key 'normalise'"),
    ({'a': {'kind': 'dense', 'normalize': 'log'}}, TASKS, 'normalize is'),
    ({'a': {'kind': 'sequence', 'delimiter': '||'}}, TASKS, 'delimiter is'),
    ({'a': {'kind': 'sequence', 'delimiter': ' '}}, TASKS, 'delimiter is'),
    ({'a': {'kind': 'sequence', 'max_len': 0}}, TASKS, 'max_len is 0'),
    ({'a': {'kind': 'categorical', 'min_count': 0}}, TASKS, 'min_count'),
    (
      {'a': {'kind': 'sequence', 'shared_with': 'b'}},
      TASKS,
      "shared_with is 'b'",
    ),
    (
      {'a': {'kind': 'history', 'user': 'u', 'item': 'x', 'time': 't'}},
      TASKS,
      "item is 'x'",
    ),
    ({'click': {'kind': 'dense'}}, TASKS, "column 'click'.*also feature"),
    (FEATURES, {'t': {'label': 'rating >= four'}}, 'not a number'),
    (FEATURES, {'t': {'label': 'y', 'kind': 'ranking'}}, "kind is 'ranking'"),
    (FEATURES, {'t': {'label': 'y >= 4', 'kind': 'regression'}}, 'binary'),
    (FEATURES, {'t': {'label': 'y', 'transform': 'log1p'}}, 'regression'),
    (FEATURES, {'t': {'labels': 'y'}}, "unknown key 'labels'"),
    (FEATURES, {}, 'dataset.tasks'),
    ({}, TASKS, 'dataset.features'),
  ],
)
def test_schema_errors_are_one_line(features, tasks, message):
  with pytest.raises(ConfigError, match=message) as e:
    schema_parse.parse(features, tasks)
  assert '\n' not in str(e.value)


def test_parse_orders_and_defaults():
  s = schema_parse.parse(
    {
      **FEATURES,
      'h': {'kind': 'history', 'user': 'user', 'item': 'item', 'time': 'ts'},
    },
    {
      'b': {'label': 'rating >= 4'},
      'a': {'label': 'x', 'kind': 'regression', 'where': 'is_click'},
      'c': {'label': 'z', 'where': 'dwell > 2.5'},
    },
    task_order=('c',),
  )
  assert [f.name for f in s.features] == ['age', 'h', 'item', 'user']
  assert [t.name for t in s.tasks] == ['c', 'a', 'b']
  assert s.tasks[2].condition == conditions.Condition('rating', '>=', 4.0)
  assert s.tasks[1].where == conditions.Condition('is_click', '==', 1.0)
  assert s.table_of('h') == 'item'
  assert s.columns() == (
    'age', 'user', 'ts', 'item', 'z', 'dwell', 'x', 'is_click', 'rating',
  )  # fmt: skip


def test_missing_column_names_the_file():
  s = schema_parse.parse(FEATURES, TASKS)
  with pytest.raises(DataError, match=r"f\.csv: has no column 'item'"):
    schema_checks.check_columns(s, ['user', 'age', 'click', 'items'], 'f.csv')


def test_vocabulary_min_count_and_oov_against_pandas():
  rng = np.random.default_rng(0)
  train = pd.Series(rng.integers(0, 30, 500).astype(str))
  other = pd.Series(rng.integers(0, 40, 200).astype(str))
  counts = train.value_counts()
  for min_count in (1, 5, 20):
    vocab = encoding.fit_vocabulary(counts.to_dict(), min_count)
    kept = sorted(counts[counts >= min_count].index)
    assert vocab == kept
    ids = encoding.encode_ids(other.to_numpy(object), {'vocabulary': vocab})
    want = [kept.index(v) + 2 if v in kept else 1 for v in other]
    np.testing.assert_array_equal(ids, want)
  ids = encoding.encode_ids(
    np.array(['3', None, np.nan], object), {'vocabulary': ['3']}
  )
  np.testing.assert_array_equal(ids, [2, 1, 1])  # missing: the OOV id


HASH_SCRIPT = (
  'import json, sys; from mtl.data import encoding; '
  'v = json.loads(sys.argv[1]); '
  'print(json.dumps(encoding.stable_hash(v, 1000)'
  '.tolist()))'
)


def test_hash_is_stable_across_processes_and_seeds():
  values = [f'user{i}' for i in range(50)] + ['', 'é', '3.0']
  here = encoding.stable_hash(values, 1000).tolist()
  for seed in ('1', '2'):
    out = subprocess.run(
      [sys.executable, '-c', HASH_SCRIPT, json.dumps(values)],
      capture_output=True,
      text=True,
      check=True,
      env={'PYTHONHASHSEED': seed, 'PATH': '/usr/bin:/bin'},
      cwd=str(__import__('pathlib').Path(__file__).parents[2]),
    )
    assert json.loads(out.stdout) == here
  assert min(here) >= 0 and max(here) < 1000
  ids = encoding.encode_ids(np.array(values, object), {'hash_buckets': 1000})
  assert ids[0] == here[0] + 2


def test_hash_collisions_match_the_birthday_expectation():
  """n distinct values in N buckets occupy N (1 - (1 - 1/N)^n) on average;
  for independent uniform hashes the count's std is below sqrt(N)/2."""
  for n, buckets in ((2000, 1000), (500, 5000)):
    b = encoding.stable_hash([f'v{i}' for i in range(n)], buckets)
    occupied = len(np.unique(b))
    expected = buckets * (1 - (1 - 1 / buckets) ** n)
    assert abs(occupied - expected) < 4 * np.sqrt(buckets) / 2


def test_sequences_truncate_to_the_latest_and_pad():
  cells = ['a|b|c|d', 'b', '', None, ['c', 'a'], 'x||a']
  lists = [sequences.split_values(c, '|') for c in cells]
  assert lists == [['a', 'b', 'c', 'd'], ['b'], [], [], ['c', 'a'], ['x', 'a']]
  enc = {'vocabulary': ['a', 'b', 'c']}
  got = sequences.encode_sequences(
    pd.Series(cells, dtype=object), '|', 3, encoding.Lookup(enc)
  )
  want = np.zeros((6, 3), np.int32)
  for r, values in enumerate(lists):
    for j, v in enumerate(values[-3:]):
      want[r, j] = {'a': 2, 'b': 3, 'c': 4}.get(v, 1)
  np.testing.assert_array_equal(got, want)
  assert (got > 0).sum(1).tolist() == [3, 1, 0, 0, 2, 2]  # the mask


@pytest.mark.parametrize('with_a_list', [False, True])
def test_vectorised_sequences_equal_a_per_cell_oracle(with_a_list):
  """encode_sequences (pyarrow split of text cells; per cell when a cell
  is a list) against Python's str.split, empty parts dropped, the last 4
  kept, ids by the vocabulary, padded with 0."""
  rng = np.random.default_rng(0)
  cells = [
    '|'.join(rng.choice(['a', 'b', 'c', 'zz', ''], rng.integers(0, 9)))
    for _ in range(500)
  ]
  cells[3], cells[7], cells[11] = None, np.nan, '|||'
  if with_a_list:
    cells[20] = ['b', 'q', 'a', 'c', 'c']
  vocab = {'a': 2, 'b': 3, 'c': 4}
  got = sequences.encode_sequences(
    pd.Series(cells, dtype=object),
    '|',
    4,
    encoding.Lookup({'vocabulary': list(vocab)}),
  )
  want = np.zeros((500, 4), np.int32)
  for r, cell in enumerate(cells):
    if isinstance(cell, list):
      values = cell
    elif isinstance(cell, str):
      values = [v for v in cell.split('|') if v]
    else:
      values = []
    for j, v in enumerate(values[-4:]):
      want[r, j] = vocab.get(v, 1)
  np.testing.assert_array_equal(got, want)


def brute_force_history(df, max_len):
  """Row r's history: the rows of its user with time < its time, ordered by
  (time, row), the last max_len."""
  out = []
  for r in range(len(df)):
    same = df[(df.user == df.user[r]) & (df.time < df.time[r])]
    same = same.sort_values('time', kind='stable')
    out.append(list(same.index[-max_len:]))
  return out


def test_history_holds_only_strictly_earlier_rows(tmp_path):
  """Items are row numbers, so the history names rows: each row's is its
  user's rows strictly before it in time (ties excluded), latest max_len."""
  rng = np.random.default_rng(0)
  n = 400
  df = pd.DataFrame(
    {
      'user': rng.integers(0, 12, n),
      'time': rng.integers(0, 40, n),  # many ties
      'item': np.arange(n),
      'click': rng.integers(0, 2, n),
    }
  )
  path = tmp_path / 't.csv'
  df.to_csv(path, index=False)
  s = schema_parse.parse(
    {
      'item': {'kind': 'categorical'},
      'h': {
        'kind': 'history',
        'user': 'user',
        'item': 'item',
        'time': 'time',
        'max_len': 5,
      },
    },
    TASKS,
  )
  source = table_files.Source(str(path), 'csv', None, ())
  plan = table_plan.Plan(
    [(source, None)], {'rule': 'random', 'seed': 0, 'validation_fraction':
                       0.1, 'test_fraction': 0.1}, s, chunksize=64,
  )  # fmt: skip
  rows = np.arange(n)
  items = plan.history['h']['items'].astype(int) + 1  # 0 stays padding
  got = table_plan.history_ids(plan.history['h'], items, rows, 5)
  want = brute_force_history(df, 5)
  for r in rows:
    hist = [i - 1 for i in got[r] if i != 0]
    assert hist == want[r], r
    assert r not in hist
    assert (df.time[hist] < df.time[r]).all()
    assert (df.user[hist] == df.user[r]).all()


@pytest.mark.parametrize('name', sorted(FEATURE_KINDS))
def test_every_feature_kind_has_a_frozen_spec(name):
  """A kind's entry is a frozen Spec dataclass with a `name`, and a
  `column` exactly when it is not derived over the log."""
  kind = FEATURE_KINDS[name]
  fields = {f.name for f in dataclasses.fields(kind.spec)}
  assert issubclass(kind.spec, Spec)
  assert kind.spec.__dataclass_params__.frozen
  assert 'name' in fields
  assert ('column' in fields) == (not kind.derived)


def test_kinds_encode_their_inputs_by_hand():
  """Dense, categorical and sequence rows encoded by their kinds, against
  numbers worked out by hand; one column per input name."""
  schema = schema_parse.parse(
    {
      'age': {'kind': 'dense', 'missing': 'mean', 'missing_indicator': True},
      'item': {'kind': 'categorical'},
      'tags': {'kind': 'sequence', 'max_len': 2, 'shared_with': 'item'},
    },
    TASKS,
  )
  enc = {
    'dense': {'age': {'mean': 30.0, 'std': 10.0}},
    'tables': {'item': {'vocabulary': ['a', 'b']}},
  }
  chunk = pd.DataFrame(
    {'age': ['40', None, '10'], 'item': ['b', 'zz', None],
     'tags': ['a|b|x', '', 'b']}
  )  # fmt: skip
  source = table_files.Source('rows', 'csv', None, ())
  rows = Rows(
    schema, chunk, np.arange(3), source, enc,
    encoding.Lookups(enc['tables']), None,
  )  # fmt: skip
  got = feature_kinds.encode(rows, 0)
  # (40 - 30) / 10, the mean's 0, (10 - 30) / 10; then the indicator.
  np.testing.assert_array_equal(
    got['dense'], [[1.0, 0.0], [0.0, 1.0], [-2.0, 0.0]]
  )
  # item: b -> 3, unseen and missing -> 1; tags: the last two, padded.
  np.testing.assert_array_equal(
    got['sparse'], [[3, 3, 1], [1, 0, 0], [1, 3, 0]]
  )
  dense, sparse = feature_kinds.inputs(schema)
  assert dense == ['age', 'age_missing']
  assert sparse == ['item', 'tags[0]', 'tags[1]']
