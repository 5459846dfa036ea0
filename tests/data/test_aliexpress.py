"""AliExpress through the `table` dataset (configs/aliexpress.py).

Expected values come from the raw sample files read here with pandas; the
validation rows are drawn here by the documented hold-out rule with numpy
(a stratified fraction of the train file), and everything expected of them
is computed from the raw file.
"""

import numpy as np
import pandas as pd
import pytest

from configs import aliexpress as config
from mtl.data import DATASETS
from mtl.errors import ConfigError, DataError, DataFileNotFound

SAMPLE = config.VARIANTS['sample']


def load(**overrides):
  kwargs = config.get_config().dataset.to_dict()
  return DATASETS['table'](**{**kwargs, **overrides})


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return tmp_path_factory.getbasetemp() / 'tfds-shared'


@pytest.fixture(scope='module')
def raw(data_dir):
  folder = data_dir / 'aliexpress-sample'
  return {
    'train': pd.read_csv(folder / SAMPLE['path']),
    'test': pd.read_csv(folder / SAMPLE['test_path']),
  }


@pytest.fixture(scope='module')
def ds(tfds_dir, data_dir):
  return load(data_dir=str(tfds_dir))


def held_out(frame, fraction=0.1, seed=0) -> np.ndarray:
  """The validation rows of the train file, by the documented rule: per
  (click, conversion) group of n rows, round(fraction * n) drawn, at least
  one and at most n - 1 when n >= 2; groups in order, one generator."""
  groups = (2 * frame['click'] + frame['conversion']).to_numpy()
  rng = np.random.default_rng(seed)
  chosen = []
  for g in range(4):
    rows = np.flatnonzero(groups == g)
    k = round(fraction * len(rows))
    if len(rows) >= 2:
      k = min(max(k, 1), len(rows) - 1)
    chosen += list(rng.choice(rows, size=k, replace=False))
  return np.sort(chosen)


def test_shapes_and_columns(ds):
  assert len(ds.sparse_names) == 16 and len(ds.dense_names) == 63
  assert [t.name for t in ds.tasks] == ['click', 'conversion']
  assert 'search_id' not in ds.sparse_names + ds.dense_names


def test_validation_is_a_stratified_fraction_of_train(ds, raw):
  validation = held_out(raw['train'])
  # 40 (0,0) -> 4, 58 (1,0) -> 6, 2 (1,1) -> 1: a conversion on both sides.
  assert len(validation) == 11
  assert ds.stats['rows'] == {'train': 89, 'validation': 11, 'test': 20}
  train = np.setdiff1d(np.arange(100), validation)
  for split, rows in (('train', train), ('validation', validation)):
    frame = raw['train'].iloc[rows]
    click = frame['click'].to_numpy()
    np.testing.assert_array_equal(ds.splits[split]['labels'][0], click)
    np.testing.assert_array_equal(ds.splits[split]['mask'][1], click)
    np.testing.assert_array_equal(
      ds.splits[split]['labels'][1], frame['conversion'] * click
    )
  assert ds.splits['validation']['labels'][1].sum() == 1


def test_split_seed(ds, tfds_dir, raw):
  other = load(data_dir=str(tfds_dir), split_seed=1)
  assert other.stats['rows'] == ds.stats['rows']
  validation = raw['train'].iloc[held_out(raw['train'], seed=1)]
  np.testing.assert_array_equal(
    other.splits['validation']['labels'][0], validation['click']
  )
  assert not np.array_equal(
    other.splits['validation']['dense'], ds.splits['validation']['dense']
  )
  np.testing.assert_array_equal(
    other.splits['test']['labels'], ds.splits['test']['labels']
  )


def test_vocabularies_and_moments_exclude_validation_rows(ds, raw):
  fit = raw['train'].drop(index=held_out(raw['train']))
  unseen = 0
  for j, name in enumerate(ds.sparse_names):
    vocab = np.sort(fit[name].astype(str).unique())
    assert ds.vocab_sizes[j] == len(vocab) + 2
    values = raw['test'][name].astype(str).to_numpy()
    seen = np.isin(values, vocab)
    want = np.where(seen, np.searchsorted(vocab, values) + 2, 1)
    np.testing.assert_array_equal(ds.splits['test']['sparse'][:, j], want)
    unseen += int((~seen).sum())
  assert unseen > 0  # test values never seen in training map to id 1
  dense = fit[list(ds.dense_names)]
  mean, std = dense.mean(), dense.std(ddof=0)
  std[dense.max() == dense.min()] = 1.0
  want = (raw['test'][list(ds.dense_names)] - mean) / std
  np.testing.assert_allclose(ds.splits['test']['dense'], want, atol=1e-5)


def test_missing_files_a_bad_fraction_and_a_split_without_rows(
  tmp_path, data_dir
):
  manual = tmp_path / 'none'
  kw = dict(manual_dir=str(manual), data_dir=str(tmp_path / 't'))
  with pytest.raises(DataFileNotFound) as err:
    load(**kw)
  message = str(err.value)
  assert '\n' not in message
  assert message.startswith('aliexpress: file(s) not found: ')
  for key in ('path', 'test_path'):
    assert str(manual / SAMPLE[key]) in message
  assert config.SOURCE in message
  with pytest.raises(DataFileNotFound, match='tianchi.aliyun.com/dataset/7469'):
    load(variant='full', **kw)
  with pytest.raises(ConfigError) as err:
    load(validation_fraction=1.0)
  assert str(err.value).startswith(
    'dataset.validation_fraction is 1.0, expected a number in (0, 1)'
  )
  # One train row: its group of one gives no validation row.
  manual.mkdir()
  sample = data_dir / 'aliexpress-sample'
  lines = (sample / SAMPLE['path']).read_text().splitlines()
  (manual / 'train.csv').write_text('\n'.join(lines[:2]) + '\n')
  (manual / 'test.csv').write_bytes((sample / SAMPLE['test_path']).read_bytes())
  with pytest.raises(DataError) as err:
    load(variant='full', **kw)
  assert str(err.value) == (
    "aliexpress: the 'files' split leaves no validation rows, expected some"
  )
