"""text_counts.TextCounts and encoding's Arrow paths against Python's own
counting, sorting and dictionary lookups."""

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa

from mtl.data import encoding, sequences
from mtl.data.text_counts import TextCounts


def _chunks(seed=0):
  rng = np.random.default_rng(seed)
  words = ['b', 'a', '', 'é', 'Z', 'z1', '10', '9', '\u4e2d', 'a b', 'ß']
  for _ in range(30):
    n = int(rng.integers(0, 500))
    picks = rng.zipf(1.3, n) % 3000
    yield [words[p] if p < len(words) else f'id{p}' for p in picks]


def test_vocabulary_is_pythons_count_and_sort():
  counts = Counter()
  merged_often, merged_once = TextCounts(merge_rows=50), TextCounts()
  for i, chunk in enumerate(_chunks()):
    counts.update(chunk)
    for ours in (merged_often, merged_once):
      ours.add(pa.array(chunk) if i % 2 else np.array(chunk, object))
  assert merged_often.merged is not None and not merged_once.merged
  for min_count in (1, 2, 5):
    expected = encoding.fit_vocabulary(counts, min_count)
    assert merged_often.vocabulary(min_count) == expected
    assert merged_once.vocabulary(min_count) == expected
  assert TextCounts().vocabulary(1) == []


def test_integers_and_their_texts_are_counted_as_one_value():
  rng = np.random.default_rng(5)
  counts = Counter()
  often, once = TextCounts(merge_rows=20), TextCounts()
  for i in range(40):
    numbers = rng.integers(-30, 30, int(rng.integers(1, 60)))
    if i % 3 == 0:  # An Arrow integer column (Parquet ids as numbers).
      given = pa.array(numbers, pa.int32() if i % 2 else pa.int64())
      texts = [str(v) for v in numbers]
    else:  # Texts: integers' own and near misses ('007', '+7', '-0').
      texts = [str(v) for v in numbers] + list(rng.choice(NUMERIC_TEXTS, 5))
      given = pa.array(texts) if i % 2 else np.array(texts, object)
    counts.update(texts)
    often.add(given)
    once.add(given)
  big = pa.array([2**64 - 1, 7], pa.uint64())  # Above int64: as text.
  counts.update(['18446744073709551615', '7'])
  often.add(big)
  once.add(big)
  for min_count in (1, 3):
    expected = encoding.fit_vocabulary(counts, min_count)
    assert often.vocabulary(min_count) == expected
    assert once.vocabulary(min_count) == expected


def test_lookup_of_text_is_a_dict_lookup():
  vocabulary = sorted({v for c in _chunks(1) for v in c})
  lookup = encoding.Lookup({'vocabulary': vocabulary[::2]})
  index = {v: encoding.FIRST_ID + i for i, v in enumerate(vocabulary[::2])}
  for chunk in _chunks(2):
    cells = [None if i % 7 == 3 else v for i, v in enumerate(chunk)]
    expected = [index.get(v, encoding.OOV_ID) for v in cells]
    for given in (
      np.array(cells, object),
      pd.Series(cells, dtype='str'),
      pa.array(cells, pa.string()),
    ):
      assert lookup(given).tolist() == expected
      assert lookup(given).dtype == np.int32


# Integers' texts and near misses: by number only an integer's own text.
NUMERIC_TEXTS = [
  '0', '-0', '7', '007', '+7', '7.0', '-12', '12', ' 12', '1e3',
  '999999999999999999', '1000000000000000000', '-999999999999999999',
  '9223372036854775808', 'u7', '', '٣',
]  # fmt: skip


def test_lookup_of_integer_texts_and_integers_is_a_dict_lookup():
  rng = np.random.default_rng(3)
  for vocabulary in (
    sorted(NUMERIC_TEXTS[::2]),
    sorted(NUMERIC_TEXTS[1::2]),
    [],
    sorted(str(v) for v in rng.integers(-50, 50, 40)),
  ):
    vocabulary = sorted(set(vocabulary))
    lookup = encoding.Lookup({'vocabulary': vocabulary})
    index = {v: encoding.FIRST_ID + i for i, v in enumerate(vocabulary)}
    cells = NUMERIC_TEXTS + [str(v) for v in rng.integers(-60, 60, 50)]
    cells = [None if i % 9 == 4 else v for i, v in enumerate(cells)]
    expected = [index.get(v, encoding.OOV_ID) for v in cells]
    assert lookup(pa.array(cells, pa.string())).tolist() == expected
    assert lookup(np.array(cells, object)).tolist() == expected
    # An Arrow integer column (Parquet ids read as numbers): its texts'.
    ints = [None, 0, 7, -12, 12, 10**18, -(10**18) + 1, 2**63 - 1, 5]
    want = [
      encoding.OOV_ID if v is None else index.get(str(v), encoding.OOV_ID)
      for v in ints
    ]
    for dtype in (pa.int64(), pa.int32()):
      if dtype == pa.int32():
        ints, want = ints[:5] + ints[-1:], want[:5] + want[-1:]
      assert lookup(pa.array(ints, dtype)).tolist() == want
    assert lookup(pa.array([None], pa.int64())).tolist() == [encoding.OOV_ID]


def test_hashed_lookup_of_text_is_stable_hash():
  lookup = encoding.Lookup({'hash_buckets': 13})
  cells = ['a', None, 'b', 'a', '', 'é']
  expected = [
    encoding.OOV_ID
    if v is None
    else encoding.FIRST_ID + int(encoding.stable_hash([v], 13)[0])
    for v in cells
  ]
  assert lookup(pd.Series(cells, dtype='str')).tolist() == expected


def test_last_text_is_split_values():
  cells = ['a|b|c', '', None, 'c||a|x', '|', 'q']
  values, lengths = sequences.last_text(pd.Series(cells, dtype='str'), '|', 2)
  expected = [sequences.split_values(c, '|')[-2:] for c in cells]
  assert lengths.tolist() == [len(e) for e in expected]
  assert values.to_pylist() == [v for e in expected for v in e]
