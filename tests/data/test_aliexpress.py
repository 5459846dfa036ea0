"""Tests for the AliExpress loader (mtl/data/aliexpress*.py).

Expected values come from the raw sample files read here with pandas. Which
train-file rows form the validation split is read from the prepared data's
`row` field; everything expected of those rows is computed from the raw file.
"""

import numpy as np
import pandas as pd
import pytest

from mtl.data import aliexpress, prepared
from mtl.data import aliexpress_builder as aeb

FILES = aeb.FILES['sample']


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return tmp_path_factory.getbasetemp() / 'tfds-shared'


@pytest.fixture(scope='module')
def raw(data_dir):
  folder = data_dir / 'aliexpress-sample'
  return {s: pd.read_csv(folder / f) for s, f in FILES.items()}


@pytest.fixture(scope='module')
def ds(tfds_dir, data_dir):
  return aliexpress.load_aliexpress(data_dir=tfds_dir)


@pytest.fixture(scope='module')
def validation_rows(ds, tfds_dir):
  builder = aeb.AliExpress(
    config=aeb.AliExpress.config(
      variant='sample', validation_fraction=0.1, seed=0
    ),
    data_dir=tfds_dir,
  )
  return prepared.read_rows(builder, 'validation')['row']


def _groups(frame):
  return (2 * frame['click'] + frame['conversion']).to_numpy()


def test_shapes_and_columns(ds, raw):
  assert len(ds.sparse_names) == 16 and len(ds.dense_names) == 63
  assert [t.name for t in ds.tasks] == ['click', 'conversion']
  assert 'search_id' not in ds.sparse_names + ds.dense_names
  assert list(raw['train'].columns) == list(aeb.COLUMNS)


def test_validation_is_a_stratified_fraction_of_train(ds, raw, validation_rows):
  groups = _groups(raw['train'])
  held = groups[validation_rows]
  for g in range(4):
    n = int((groups == g).sum())
    want = min(max(round(0.1 * n), 1), n - 1) if n >= 2 else round(0.1 * n)
    assert int((held == g).sum()) == want, g
  # 40 (0,0) -> 4, 58 (1,0) -> 6, 2 (1,1) -> 1: a conversion on both sides.
  assert ds.stats['rows'] == {'train': 89, 'validation': 11, 'test': 20}
  train_rows = np.setdiff1d(np.arange(100), validation_rows)
  for split, rows in (('train', train_rows), ('validation', validation_rows)):
    frame = raw['train'].iloc[rows]
    np.testing.assert_array_equal(ds.splits[split]['labels'][0], frame['click'])
    np.testing.assert_array_equal(
      ds.splits[split]['labels'][1], frame['conversion']
    )
  assert ds.splits['validation']['labels'][1].sum() == 1


def test_split_seed(ds, tfds_dir, raw):
  other = aliexpress.load_aliexpress(data_dir=tfds_dir, split_seed=1)
  assert other.stats['rows'] == ds.stats['rows']
  assert not np.array_equal(
    other.splits['validation']['dense'], ds.splits['validation']['dense']
  )
  np.testing.assert_array_equal(
    other.splits['test']['labels'], ds.splits['test']['labels']
  )


def test_conversion_spaces(ds, tfds_dir, raw):
  test = raw['test']
  np.testing.assert_array_equal(ds.splits['test']['mask'][1], test['click'])
  np.testing.assert_array_equal(ds.splits['test']['mask'][0], 1)
  ctcvr = aliexpress.load_aliexpress(
    data_dir=tfds_dir, conversion_space='impression'
  )
  both = (test['click'] & test['conversion']).to_numpy()
  np.testing.assert_array_equal(ctcvr.splits['test']['labels'][1], both)
  np.testing.assert_array_equal(ctcvr.splits['test']['mask'], 1)


def test_vocabularies_and_moments_exclude_validation_rows(
  ds, raw, validation_rows
):
  fit = raw['train'].drop(index=validation_rows)
  unseen = 0
  for j, name in enumerate(ds.sparse_names):
    vocab = np.sort(fit[name].unique())
    assert ds.vocab_sizes[j] == len(vocab) + 1
    values = raw['test'][name].to_numpy()
    seen = np.isin(values, vocab)
    want = np.where(seen, np.searchsorted(vocab, values) + 1, 0)
    np.testing.assert_array_equal(ds.splits['test']['sparse'][:, j], want)
    unseen += int((~seen).sum())
  assert unseen > 0  # test values never seen in training map to id 0
  dense = fit[list(ds.dense_names)]
  mean, std = dense.mean(), dense.std(ddof=0)
  std[dense.max() == dense.min()] = 1.0
  want = (raw['test'][list(ds.dense_names)] - mean) / std
  np.testing.assert_allclose(ds.splits['test']['dense'], want, atol=1e-5)


def test_missing_files_and_bad_fraction(tmp_path):
  manual = tmp_path / 'none'
  with pytest.raises(FileNotFoundError) as err:
    aliexpress.load_aliexpress(manual_dir=manual, data_dir=tmp_path / 't')
  message = str(err.value)
  assert '\n' not in message
  assert message.startswith('aliexpress: raw file(s) not found: ')
  for name in FILES.values():
    assert str(manual / name) in message and aeb.SOURCE + name in message
  with pytest.raises(
    FileNotFoundError, match='tianchi.aliyun.com/dataset/74690'
  ):
    aliexpress.load_aliexpress(
      variant='full', manual_dir=manual, data_dir=tmp_path / 't'
    )
  with pytest.raises(ValueError) as err:
    aliexpress.load_aliexpress(validation_fraction=1.0)
  assert str(err.value) == (
    'aliexpress: validation_fraction is 1.0, expected a number in (0, 1)'
  )
