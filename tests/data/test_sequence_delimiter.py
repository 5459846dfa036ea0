"""A sequence feature whose delimiter never occurs in its column
(mtl/data/delimiters.py, checked when the table is prepared).

Oracle: the tags written, counted by hand: 5 distinct tags joined by ';'.
Read with the default '|' each whole string would be one id (one per
distinct string); the preparation instead stops with one line naming the
file, feature, column, delimiter and a value of the file.
"""

import numpy as np
import pandas as pd
import pytest

from mtl.data import DATASETS
from mtl.errors import DataError

TAGS = ('red', 'blue', 'sale', 'new', 'gift')


def _write(path, sep: str, n=60, seed=0) -> pd.DataFrame:
  rng = np.random.default_rng(seed)
  df = pd.DataFrame(
    {
      'user': rng.integers(0, 5, n),
      'tags': [sep.join(rng.choice(TAGS, 1 + i % 3)) for i in range(n)],
      'y': np.arange(n) % 2,
    }
  )
  df.to_csv(path, index=False)
  return df


def _load(tmp_path, **tags):
  return DATASETS['table'](
    path=str(tmp_path / 't.csv'),
    features={
      'user': {'kind': 'categorical'},
      'tags': {'kind': 'sequence', 'max_len': 3, **tags},
    },
    tasks={'y': {'label': 'y'}},
    data_dir=str(tmp_path / 'tfds'),
    chunksize=16,
  )


def test_a_delimiter_absent_from_the_column_is_one_line(tmp_path):
  df = _write(tmp_path / 't.csv', ';')
  with pytest.raises(DataError) as e:
    _load(tmp_path)  # The default delimiter '|'.
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith(
    f"{tmp_path / 't.csv'}: sequence feature 'tags' (column 'tags') has "
    "delimiter '|', which occurs in none of its values, but ';' does (e.g. '"
  )
  example = message.split("(e.g. '")[1].split("')")[0]
  assert example in set(df.tags) and ';' in example
  assert message.endswith(
    "expected dataset.features.tags.delimiter=';', or values split by '|'"
  )
  assert not list((tmp_path / 'tfds').rglob('*.array_record*'))


def test_the_right_delimiter_gives_the_five_tags(tmp_path):
  _write(tmp_path / 't.csv', ';')
  ds = _load(tmp_path, delimiter=';')
  sizes = dict(zip(ds.sparse_names, ds.vocab_sizes, strict=True))
  assert int(sizes['tags[0]']) == 2 + len(TAGS)  # padding, OOV, the five tags


def test_one_value_per_row_without_separators_passes(tmp_path):
  df = _write(tmp_path / 't.csv', ';')
  df['tags'] = [TAGS[i % 5] for i in range(len(df))]  # never split
  df.to_csv(tmp_path / 't.csv', index=False)
  ds = _load(tmp_path)
  sizes = dict(zip(ds.sparse_names, ds.vocab_sizes, strict=True))
  assert int(sizes['tags[0]']) == 2 + len(TAGS)
