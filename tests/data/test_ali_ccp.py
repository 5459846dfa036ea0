"""Tests for the Ali-CCP loader (mtl/data/ali_ccp*.py, csv_builder, prepared).

Expected values are computed here from the raw CSV files with pandas and
numpy, independently of the loader. The streaming test prepares a generated
file of many chunks and compares it with a whole-file pandas read.
"""

import time

import numpy as np
import pandas as pd
import pytest

from mtl.data import ali_ccp, prepared
from mtl.data import ali_ccp_builder as acb
from mtl.data import csv_builder as cb

FILES = acb.FILES['sample']


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  # Shared by the data test modules, so the sample is prepared once.
  return tmp_path_factory.getbasetemp() / 'tfds-shared'


@pytest.fixture(scope='module')
def raw(data_dir):
  folder = data_dir / 'ali-ccp-sample'
  return {s: pd.read_csv(folder / f) for s, f in FILES.items()}


@pytest.fixture(scope='module')
def click_space(tfds_dir, data_dir):
  return ali_ccp.load_ali_ccp(data_dir=tfds_dir)


def _task(ds, split, key, task):
  return ds.splits[split][key][[t.name for t in ds.tasks].index(task)]


def test_shapes_rows_and_label_counts_match_the_raw_files(click_space, raw):
  ds = click_space
  assert ds.dense_names == tuple(c for c in raw['train'] if c[0] == 'D')
  assert len(ds.dense_names) == 8 and len(ds.sparse_names) == 23
  assert set(ds.sparse_names) | set(ds.dense_names) | {'click', 'purchase'} == (
    set(raw['train'].columns)
  )
  for split, frame in raw.items():
    assert ds.num_rows(split) == len(frame)
    click = _task(ds, split, 'labels', 'click')
    np.testing.assert_array_equal(click, frame['click'].to_numpy())
  assert ds.stats['rows'] == {'train': 100, 'validation': 50, 'test': 50}
  assert ds.stats['positive_rate']['train']['click'] == pytest.approx(0.07)


def test_click_space_masks_purchase_to_clicks(click_space, raw):
  for split, frame in raw.items():
    click = frame['click'].to_numpy(np.float32)
    np.testing.assert_array_equal(_task(click_space, split, 'mask', 'click'), 1)
    np.testing.assert_array_equal(
      _task(click_space, split, 'mask', 'purchase'), click
    )
    np.testing.assert_array_equal(
      _task(click_space, split, 'labels', 'purchase'), frame['purchase']
    )
  # The CVR rate: purchases among the 7 training clicks.
  rate = click_space.stats['positive_rate']['train']['purchase']
  assert rate == pytest.approx(1 / 7)


def test_impression_space_is_ctcvr(tfds_dir, raw):
  ds = ali_ccp.load_ali_ccp(data_dir=tfds_dir, conversion_space='impression')
  for split, frame in raw.items():
    both = (frame['click'] & frame['purchase']).to_numpy()
    np.testing.assert_array_equal(_task(ds, split, 'labels', 'purchase'), both)
    np.testing.assert_array_equal(ds.splits[split]['mask'], 1)


def test_vocabularies_come_from_the_training_file(click_space, raw):
  ds = click_space
  unseen = 0
  for j, name in enumerate(ds.sparse_names):
    vocab = np.sort(raw['train'][name].unique())
    assert ds.vocab_sizes[j] == len(vocab) + 1, name
    for split, frame in raw.items():
      values = frame[name].to_numpy()
      seen = np.isin(values, vocab)
      want = np.where(seen, np.searchsorted(vocab, values) + 1, 0)
      ids = ds.splits[split]['sparse'][:, j]
      np.testing.assert_array_equal(ids, want, err_msg=f'{split} {name}')
      assert (ids < ds.vocab_sizes[j]).all()
      unseen += int((~seen).sum())
  # Values only in val/test (item ids of column 205, ...) map to OOV id 0.
  assert unseen > 0
  assert (ds.splits['train']['sparse'] > 0).all()


def test_dense_standardised_with_training_moments(click_space, raw):
  train = raw['train'][list(click_space.dense_names)]
  mean, std = train.mean(), train.std(ddof=0)
  std[train.max() == train.min()] = 1.0  # constant columns
  for split, frame in raw.items():
    want = (frame[list(click_space.dense_names)] - mean) / std
    np.testing.assert_allclose(
      click_space.splits[split]['dense'], want.to_numpy(), atol=1e-6
    )


def _augmented(raw, copies, shift):
  """`copies` perturbed copies of a frame: new ids, new dense values.

  Each copy moves the purchase to another click and jitters the dense
  values: exact duplicates of the one purchase row would make its feature
  values a genuine function of the label, which the leakage guard reports.
  """
  rng = np.random.default_rng(shift)
  clicks = np.flatnonzero(raw['click'].to_numpy())
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


def test_streamed_preparation_equals_a_whole_file_read(
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
    frame.to_csv(manual / acb.FILES['full'][split], index=False)
  reads = []
  read_csv = pd.read_csv

  def spy(path, *args, **kwargs):
    reads.append((str(path), kwargs.get('chunksize'), kwargs.get('nrows')))
    return read_csv(path, *args, **kwargs)

  monkeypatch.setattr(cb.pd, 'read_csv', spy)
  ds = ali_ccp.load_ali_ccp(
    variant='full', manual_dir=manual, data_dir=tmp_path / 'p', chunksize=97
  )
  monkeypatch.undo()
  # Every read of a file's rows was chunked (nrows=0 reads the header).
  assert reads and all(c == 97 or n == 0 for _, c, n in reads)
  files = {str(manual / f) for f in acb.FILES['full'].values()}
  assert {p for p, _, _ in reads} == files
  builder = acb.AliCcp(config='full', data_dir=tmp_path / 'p')
  assert builder.info.splits['train'].num_examples == -(-2000 // 97)

  # The oracle: each whole file read at once, encoded with numpy.
  oracle = {s: pd.read_csv(manual / f) for s, f in acb.FILES['full'].items()}
  train = oracle['train']
  dense = list(acb.DENSE)
  mean, std = train[dense].mean(), train[dense].std(ddof=0)
  std[train[dense].max() == train[dense].min()] = 1.0
  for split, frame in oracle.items():
    got = ds.splits[split]
    np.testing.assert_allclose(
      got['dense'], ((frame[dense] - mean) / std).to_numpy(), atol=1e-5
    )
    for j, name in enumerate(acb.SPARSE):
      vocab = np.sort(train[name].unique())
      values = frame[name].to_numpy()
      want = np.where(
        np.isin(values, vocab), np.searchsorted(vocab, values) + 1, 0
      )
      np.testing.assert_array_equal(got['sparse'][:, j], want, err_msg=name)
    np.testing.assert_array_equal(got['labels'][0], frame['click'])
    np.testing.assert_array_equal(got['mask'][1], frame['click'])
  assert ds.vocab_sizes[acb.SPARSE.index('205')] == train['205'].nunique() + 1
  assert (
    ds.splits['validation']['sparse'][:, acb.SPARSE.index('205')] == 0
  ).any()

  # Process shares: contiguous, concatenating to the whole training split.
  for count in (2, 3):
    shares = [
      ali_ccp.load_ali_ccp(
        variant='full',
        data_dir=tmp_path / 'p',
        process_index=i,
        process_count=count,
      )
      for i in range(count)
    ]
    for key in ('dense', 'sparse'):
      whole = np.concatenate([s.splits['train'][key] for s in shares])
      np.testing.assert_array_equal(whole, ds.splits['train'][key])
    for key in ('labels', 'mask'):
      whole = np.concatenate([s.splits['train'][key] for s in shares], axis=1)
      np.testing.assert_array_equal(whole, ds.splits['train'][key])
    sizes = [s.num_rows('train') for s in shares]
    assert max(sizes) - min(sizes) <= 1
    assert shares[-1].stats['share']['train_rows'] == [2000 - sizes[-1], 2000]
    for s in shares:
      for split in ('validation', 'test'):
        np.testing.assert_array_equal(
          s.splits[split]['sparse'], ds.splits[split]['sparse']
        )


def test_process_share_reads_only_its_records(tmp_path, click_space, tfds_dir):
  builder = acb.AliCcp(config='sample', data_dir=tfds_dir)
  whole = prepared.read_rows(builder, 'train')
  part = prepared.read_rows(builder, 'train', 30, 70)
  np.testing.assert_array_equal(part['row'], np.arange(30, 70))
  np.testing.assert_array_equal(part['sparse'], whole['sparse'][30:70])
  assert prepared.process_share(10, 2, 3) == (6, 10)
  with pytest.raises(ValueError, match=r'process_index is 2, expected an int'):
    prepared.process_share(10, 2, 2)


def test_second_load_reads_the_cache(click_space, tfds_dir, tmp_path):
  start = time.perf_counter()
  again = ali_ccp.load_ali_ccp(data_dir=tfds_dir, manual_dir=tmp_path / 'x')
  assert time.perf_counter() - start < 2.0
  np.testing.assert_array_equal(
    again.splits['test']['dense'], click_space.splits['test']['dense']
  )
  assert (tfds_dir / 'ali_ccp' / 'sample' / '1.0.0').is_dir()


def _error(exc_type, fn, **kwargs) -> str:
  with pytest.raises(exc_type) as err:
    fn(**kwargs)
  message = str(err.value)
  assert '\n' not in message
  return message


def test_missing_files_name_the_paths_and_the_sources(tmp_path):
  manual = tmp_path / 'nowhere'
  message = _error(
    FileNotFoundError,
    ali_ccp.load_ali_ccp,
    manual_dir=manual,
    data_dir=tmp_path / 'tfds',
  )
  assert message.startswith('ali_ccp: raw file(s) not found: ')
  for name in FILES.values():
    assert str(manual / name) in message
    assert acb.SOURCE + name in message
  assert 'sha256 1c1d125bcdfca70c8f5ed24f6221acadab3e19b70e0b06b' in message
  message = _error(
    FileNotFoundError,
    ali_ccp.load_ali_ccp,
    variant='full',
    manual_dir=manual,
    data_dir=tmp_path / 'tfds',
  )
  assert str(manual / 'ali_ccp_train.csv') in message
  assert 'https://tianchi.aliyun.com/dataset/408' in message


def test_file_that_is_not_the_registered_sample(tmp_path, data_dir):
  manual = tmp_path / 'manual'
  manual.mkdir()
  for name in FILES.values():
    text = (data_dir / 'ali-ccp-sample' / name).read_text()
    (manual / name).write_text(text.replace('0.4734', '0.4735'))
  message = _error(
    ValueError,
    ali_ccp.load_ali_ccp,
    manual_dir=manual,
    data_dir=tmp_path / 'tfds',
  )
  assert message.startswith(f'ali_ccp: a raw file in {manual} is not the ')
  assert 'wrong checksum' in message


def _set(frame, row, column, value):
  frame = frame.astype({column: object})
  frame.loc[row, column] = value
  return frame


MALFORMED = {
  'missing column': (
    lambda f: f.drop(columns='D853'),
    "header has 32 columns (missing ['D853'], unexpected []), expected",
  ),
  'id': (
    lambda f: _set(f, 2, '205', 'x'),
    "row 3 column '205' is 'x', expected an integer id",
  ),
  'label': (
    lambda f: _set(f, 0, 'purchase', 2),
    "row 1 column 'purchase' is '2', expected 0 or 1",
  ),
  'empty': (
    lambda f: _set(f, 4, 'D508', None),
    "row 5 column 'D508' is empty, expected a finite number",
  ),
}


@pytest.mark.parametrize('case', MALFORMED)
def test_malformed_files(tmp_path, raw, case):
  edit, expected = MALFORMED[case]
  manual = tmp_path / 'full'
  manual.mkdir()
  for split, name in acb.FILES['full'].items():
    frame = edit(raw[split]) if split == 'train' else raw[split]
    frame.to_csv(manual / name, index=False)
  message = _error(
    ValueError,
    ali_ccp.load_ali_ccp,
    variant='full',
    manual_dir=manual,
    data_dir=tmp_path / 'tfds',
    chunksize=2,
  )
  assert message.startswith(f'{manual / "ali_ccp_train.csv"}: ')
  assert expected in message


def test_unknown_keywords():
  message = _error(ValueError, ali_ccp.load_ali_ccp, conversion_space='view')
  assert message == (
    "ali_ccp: unknown conversion_space 'view', expected one of "
    "('click', 'impression')"
  )
  message = _error(ValueError, ali_ccp.load_ali_ccp, variant='big')
  assert message == (
    "ali_ccp: unknown variant 'big', expected one of ('sample', 'full')"
  )
