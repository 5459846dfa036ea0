"""Parquet number columns read as numbers (table_files' `numeric`), ids
counted and looked up by number (encoding.Lookup): the same records,
vocabularies and errors as when every cell is read as its text, the
reference (the builder with no column numeric)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtl.data import DATASETS, table_files
from mtl.data import schema_parse as sp
from mtl.data import table_builder as tb
from mtl.errors import DataError

N = 300


def frame(seed=0) -> pd.DataFrame:
  rng = np.random.default_rng(seed)
  return pd.DataFrame(
    {
      'user': rng.integers(0, 7, N),
      'x': rng.normal(size=N) * 1e3,  # float64, full precision.
      'big': rng.integers(2**53, 2**60, N),  # int64 above 2**53: rounded.
      'f32': rng.normal(size=N).astype(np.float32),  # Stays text.
      'clicks': rng.integers(0, 3, N).astype(np.int8),
      'y': (rng.random(N) < 0.4).astype(np.int8),
      'watch': rng.exponential(30.0, N),
      'length': rng.integers(1, 100, N).astype(np.uint16),
      'region': rng.choice([1.0, 2.5, -0.0, 1e20], N),  # Ids by text.
      'neg': rng.integers(-4, 4, N),  # '-3', ...: some below min_count.
      'huge': rng.choice([10**18, -(10**18), 2**62, 7], N),  # 19 digits.
      'hashed': rng.integers(0, 10**6, N),
      'gaps': pd.array(rng.integers(0, 5, N), 'Int64'),  # With nulls: OOV.
    }
  ).assign(gaps=lambda d: d.gaps.mask(np.arange(N) % 7 == 0))


FEATURES = {
  'user': {'kind': 'categorical'},
  'x': {'kind': 'dense'},
  'big': {'kind': 'dense'},
  'f32': {'kind': 'dense'},
  'clicks_dense': {'kind': 'dense', 'column': 'clicks'},
  # Read as text too (a regular expression): 'clicks' stays text.
  'clicks_id': {'kind': 'categorical', 'column': 'clicks', 'extract': '(.)'},
  'region': {'kind': 'categorical'},
  'neg': {'kind': 'categorical', 'min_count': 40},
  'huge': {'kind': 'categorical'},
  'hashed': {'kind': 'categorical', 'hash_buckets': 50},
  'gaps': {'kind': 'categorical'},
}
TASKS = {
  'y': {'label': 'y'},
  'ratio': {
    'label': 'watch',
    'kind': 'regression',
    'divide_by': 'length',
    'where': 'y == 1',
  },
}


def load(tmp_path, name, data_dir, **kw):
  return DATASETS['table'](
    path=str(tmp_path / name),
    features=kw.pop('features', FEATURES),
    tasks=kw.pop('tasks', TASKS),
    data_dir=str(tmp_path / data_dir),
    chunksize=64,
    **kw,
  )


def test_which_columns_are_read_as_numbers():
  schema = sp.parse(FEATURES, TASKS, ('y', 'ratio'))
  assert tb.numeric_columns(schema) == {
    'user', 'x', 'big', 'f32', 'y', 'watch', 'length', 'region', 'neg',
    'huge', 'hashed', 'gaps',
  }  # fmt: skip


def test_number_columns_give_the_records_of_their_text(tmp_path, monkeypatch):
  frame().to_parquet(tmp_path / 't.parquet')
  fast = load(tmp_path, 't.parquet', 'numbers')
  monkeypatch.setattr(tb, 'numeric_columns', lambda schema: frozenset())
  text = load(tmp_path, 't.parquet', 'text')
  assert fast.vocab_sizes == text.vocab_sizes
  sparse = text.splits['train']['sparse'].T
  sparse = dict(zip(text.sparse_names, sparse, strict=True))
  assert (sparse['neg'] == 1).any() and (sparse['gaps'] == 1).any()  # OOV.
  # The encoding (vocabularies, moments, split sizes), as written.
  meta = [
    next((tmp_path / d).rglob('metadata.json')).read_text()
    for d in ('numbers', 'text')
  ]
  assert meta[0] == meta[1]
  for split, arrays in text.splits.items():
    for key, a in arrays.items():
      np.testing.assert_array_equal(fast.splits[split][key], a)
  # The big ints are rounded as their text is parsed.
  big = frame()['big'].to_numpy()
  parsed = np.array([float(str(v)) for v in big])
  cast = table_files.to_float(
    pd.Series(pd.arrays.ArrowExtensionArray(pa.array(big)))
  )
  np.testing.assert_array_equal(cast, parsed)


@pytest.mark.parametrize(
  'column, value, found',
  [
    ('x', np.inf, "'inf'"),
    ('x', np.nan, "'nan'"),
    ('x', None, 'empty'),
    ('y', 2, "'2'"),
    ('watch', -np.inf, "'-inf'"),
  ],
)
def test_a_bad_number_is_named_by_its_text(
  tmp_path, monkeypatch, column, value, found
):
  df = frame()
  row = int(np.flatnonzero(df['y'].to_numpy()[10:] == 1)[0]) + 10
  table = pa.Table.from_pandas(df, preserve_index=False)
  cells = table.column(column).to_pylist()
  cells[row] = value  # In the ratio's sample space (y == 1).
  table = table.set_column(
    table.schema.get_field_index(column),
    column,
    pa.array(cells, table.schema.field(column).type),
  )
  pq.write_table(table, tmp_path / 'bad.parquet')
  messages = []
  for data_dir in ('numbers', 'text'):
    with pytest.raises(DataError) as e:
      load(tmp_path, 'bad.parquet', data_dir)
    messages.append(str(e.value))
    monkeypatch.setattr(tb, 'numeric_columns', lambda schema: frozenset())
  assert messages[0] == messages[1]
  want = f"bad.parquet: row {row + 1} column '{column}' is {found}"
  assert want in messages[0] and '\n' not in messages[0]
