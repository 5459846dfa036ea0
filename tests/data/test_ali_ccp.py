"""Ali-CCP through the `table` dataset (configs/ali_ccp.py is its schema).

Expected values are computed here from the raw CSV files with pandas and
numpy, independently of the table path. The streaming test prepares a
generated file of many chunks and compares it with a whole-file pandas read.
"""

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest

from configs import ali_ccp as config
from mtl.data import DATASETS
from mtl.data import csv_builder as cb
from mtl.errors import ConfigError, DataError, DataFileNotFound

SAMPLE = config.VARIANTS['sample']
FULL = config.VARIANTS['full']
KEYS = {'train': 'path', 'validation': 'validation_path', 'test': 'test_path'}


def load(**overrides):
  """Ali-CCP by its config's dataset keywords, `overrides` applied."""
  kwargs = config.get_config().dataset.to_dict()
  return DATASETS['table'](**{**kwargs, **overrides})


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  # Shared by the data test modules, so the sample is prepared once.
  return tmp_path_factory.getbasetemp() / 'tfds-shared'


@pytest.fixture(scope='module')
def raw(data_dir):
  folder = data_dir / 'ali-ccp-sample'
  return {
    s: pd.read_csv(folder / SAMPLE[k], dtype=str) for s, k in KEYS.items()
  }


@pytest.fixture(scope='module')
def ds(tfds_dir, data_dir):
  return load(data_dir=str(tfds_dir))


def _task(ds, split, key, task):
  return ds.splits[split][key][[t.name for t in ds.tasks].index(task)]


def test_rows_labels_and_the_click_sample_space(ds, raw):
  assert sorted(ds.dense_names) == sorted(config.DENSE)
  assert sorted(ds.sparse_names) == sorted(config.SPARSE)
  assert {*ds.sparse_names, *ds.dense_names, 'click', 'purchase'} == set(
    raw['train'].columns
  )
  assert ds.stats['rows'] == {'train': 100, 'validation': 50, 'test': 50}
  for split, frame in raw.items():
    click = frame['click'].astype(np.float32).to_numpy()
    np.testing.assert_array_equal(_task(ds, split, 'labels', 'click'), click)
    np.testing.assert_array_equal(_task(ds, split, 'mask', 'click'), 1)
    np.testing.assert_array_equal(_task(ds, split, 'mask', 'purchase'), click)
    want = np.where(click > 0, frame['purchase'].astype(float), 0)
    np.testing.assert_array_equal(_task(ds, split, 'labels', 'purchase'), want)
  rates = ds.stats['label_mean']['train']
  assert rates['click'] == pytest.approx(0.07)
  assert rates['purchase'] == pytest.approx(1 / 7)  # among the 7 clicks


def test_vocabularies_come_from_the_training_file(ds, raw):
  unseen = 0
  for j, name in enumerate(ds.sparse_names):
    vocab = np.sort(raw['train'][name].unique())  # by text
    assert ds.vocab_sizes[j] == len(vocab) + 2, name  # padding, OOV
    for split, frame in raw.items():
      values = frame[name].to_numpy()
      seen = np.isin(values, vocab)
      want = np.where(seen, np.searchsorted(vocab, values) + 2, 1)
      ids = ds.splits[split]['sparse'][:, j]
      np.testing.assert_array_equal(ids, want, err_msg=f'{split} {name}')
      unseen += int((~seen).sum())
  # Values only in val/test (item ids of column 205, ...) are OOV (id 1).
  assert unseen > 0
  assert (ds.splits['train']['sparse'] > 1).all()


def test_dense_standardised_with_training_moments(ds, raw):
  names = list(ds.dense_names)
  train = raw['train'][names].astype(float)
  mean, std = train.mean(), train.std(ddof=0)
  std[train.max() == train.min()] = 1.0  # constant columns
  for split, frame in raw.items():
    want = (frame[names].astype(float) - mean) / std
    np.testing.assert_allclose(
      ds.splits[split]['dense'], want.to_numpy(), atol=1e-6
    )


def _augmented(raw, copies, shift):
  """`copies` perturbed copies of a frame: new ids, new dense values.

  Each copy moves the purchase to another click and jitters the dense
  values: exact duplicates of the one purchase row would make its feature
  values a genuine function of the label, which the leakage guard reports.
  """
  raw = raw.astype({c: float for c in config.DENSE} | {'205': int})
  rng = np.random.default_rng(shift)
  clicks = np.flatnonzero(raw['click'].astype(int).to_numpy())
  frames = []
  for k in range(copies):
    f = raw.copy()
    f['205'] += shift * k  # a new item id range per copy
    for name in ('D508', 'D509', 'D702', 'D853'):
      f[name] += rng.normal(0.0, 0.01, len(f)).round(5)
    f['purchase'] = 0
    f.loc[clicks[k % len(clicks)], 'purchase'] = 1
    frames.append(f)
  return pd.concat(frames, ignore_index=True)


def test_streamed_full_files_equal_a_whole_file_read(
  tmp_path, raw, monkeypatch
):
  manual = tmp_path / 'full'
  manual.mkdir()
  frames = {
    'train': _augmented(raw['train'], 20, 1000),
    'validation': _augmented(raw['validation'], 3, 1500),
    'test': _augmented(raw['test'], 3, 777),
  }
  for split, frame in frames.items():
    frame.to_csv(manual / FULL[KEYS[split]], index=False)
  reads = []
  read_csv = pd.read_csv

  def spy(path, *args, **kwargs):
    reads.append((str(path), kwargs.get('chunksize'), kwargs.get('nrows')))
    return read_csv(path, *args, **kwargs)

  monkeypatch.setattr(cb.pd, 'read_csv', spy)
  full = dict(variant='full', manual_dir=str(manual))
  ds = load(**full, data_dir=str(tmp_path / 'p'), chunksize=97)
  monkeypatch.undo()
  # Every read of a file's rows was chunked (nrows=0 reads the header).
  assert reads and all(c == 97 or n == 0 for _, c, n in reads)
  assert {p for p, _, _ in reads} == {
    str(manual / FULL[k]) for k in KEYS.values()
  }
  assert ds.stats['rows'] == {'train': 2000, 'validation': 150, 'test': 150}

  # The oracle: each whole file read at once, encoded with numpy.
  oracle = {s: pd.read_csv(manual / FULL[k]) for s, k in KEYS.items()}
  train = oracle['train']
  dense = list(ds.dense_names)
  mean, std = train[dense].mean(), train[dense].std(ddof=0)
  std[train[dense].max() == train[dense].min()] = 1.0
  for split, frame in oracle.items():
    got = ds.splits[split]
    np.testing.assert_allclose(
      got['dense'], ((frame[dense] - mean) / std).to_numpy(), atol=1e-5
    )
    for j, name in enumerate(ds.sparse_names):
      vocab = np.sort(train[name].astype(str).unique())
      values = frame[name].astype(str).to_numpy()
      want = np.where(
        np.isin(values, vocab), np.searchsorted(vocab, values) + 2, 1
      )
      np.testing.assert_array_equal(got['sparse'][:, j], want, err_msg=name)
    np.testing.assert_array_equal(got['labels'][0], frame['click'])
    np.testing.assert_array_equal(got['mask'][1], frame['click'])
  at = ds.sparse_names.index('205')
  assert ds.vocab_sizes[at] == train['205'].nunique() + 2
  assert (ds.splits['validation']['sparse'][:, at] == 1).any()

  # Process shares: contiguous, concatenating to the whole training split.
  for count in (2, 3):
    shares = [
      load(
        **full,
        data_dir=str(tmp_path / 'p'),
        process_index=i,
        process_count=count,
      )  # fmt: skip
      for i in range(count)
    ]
    for key in ('dense', 'sparse'):
      whole = np.concatenate([s.splits['train'][key] for s in shares])
      np.testing.assert_array_equal(whole, ds.splits['train'][key])
    sizes = [s.num_rows('train') for s in shares]
    assert max(sizes) - min(sizes) <= 1
    assert shares[-1].stats['share']['train_rows'] == [2000 - sizes[-1], 2000]


def test_the_sample_is_read_again_without_its_files(tmp_path, data_dir):
  """Files known by their sha256 identify the cache; the files may go."""
  manual = tmp_path / 'sample'
  shutil.copytree(data_dir / 'ali-ccp-sample', manual)
  first = load(manual_dir=str(manual), data_dir=str(tmp_path / 't'))
  shutil.rmtree(manual)
  again = load(manual_dir=str(manual), data_dir=str(tmp_path / 't'))
  for split, arrays in first.splits.items():
    for key, a in arrays.items():
      np.testing.assert_array_equal(again.splits[split][key], a)


def _error(exc_type, **kwargs) -> str:
  with pytest.raises(exc_type) as err:
    load(**kwargs)
  message = str(err.value)
  assert '\n' not in message
  return message


def test_missing_files_name_the_paths_and_the_source(tmp_path):
  manual = tmp_path / 'nowhere'
  kw = dict(manual_dir=str(manual), data_dir=str(tmp_path / 'tfds'))
  message = _error(DataFileNotFound, **kw)
  assert message.startswith('ali_ccp: file(s) not found: ')
  for key in KEYS.values():
    assert str(manual / SAMPLE[key]) in message
  assert config.SOURCE in message
  message = _error(DataFileNotFound, variant='full', **kw)
  assert str(manual / 'ali_ccp_train.csv') in message
  assert 'https://tianchi.aliyun.com/dataset/408' in message


def test_a_file_that_is_not_the_registered_sample(tmp_path, data_dir):
  manual = tmp_path / 'manual'
  shutil.copytree(data_dir / 'ali-ccp-sample', manual)
  train = manual / SAMPLE['path']
  train.write_text(train.read_text().replace('0.4734', '0.4735'))
  message = _error(
    DataError, manual_dir=str(manual), data_dir=str(tmp_path / 'tfds')
  )
  found = hashlib.sha256(train.read_bytes()).hexdigest()
  assert message == (
    f'ali_ccp: {train} has sha256 {found}, expected '
    f'{SAMPLE["sha256"]["path"]} (the registered file: a damaged or other '
    'copy)'
  )


def _set(frame, row, column, value):
  frame = frame.astype({column: object})
  frame.loc[row, column] = value
  return frame


MALFORMED = {
  'missing column': (
    lambda f: f.drop(columns='D853'),
    "has no column 'D853' (did you mean '853'?), expected it for the",
  ),
  'label': (
    lambda f: _set(f, 0, 'click', 2),
    "row 1 column 'click' is '2', expected 0 or 1",
  ),
  'empty': (
    lambda f: _set(f, 4, 'D508', None),
    "row 5 column 'D508' is empty, expected a finite number",
  ),
  'not a number': (
    lambda f: _set(f, 6, 'D702', 'x'),
    "row 7 column 'D702' is 'x', expected a finite number",
  ),
}


@pytest.mark.parametrize('case', MALFORMED)
def test_malformed_files(tmp_path, raw, case):
  edit, expected = MALFORMED[case]
  manual = tmp_path / 'full'
  manual.mkdir()
  for split, key in KEYS.items():
    frame = edit(raw[split]) if split == 'train' else raw[split]
    frame.to_csv(manual / FULL[key], index=False)
  message = _error(
    DataError,
    variant='full',
    manual_dir=str(manual),
    data_dir=str(tmp_path / 'tfds'),
    chunksize=2,
  )
  assert message.startswith(f'{manual / "ali_ccp_train.csv"}: ')
  assert expected in message


def test_unknown_variant():
  message = _error(ConfigError, variant='big')
  assert message == "dataset.variant is 'big', expected one of full, sample"
