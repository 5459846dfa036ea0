"""Tests for the census-income loader (mtl/data/census_income*.py).

The real data is prepared once per session into a temporary TFDS directory.
Expected counts come from shared/data/README.md and from reading the raw
files here with pandas, independently of the loader.
"""

import gzip
import time

import numpy as np
import pandas as pd
import pytest
from tensorflow_datasets.core.download import checksums

from mtl.data import census_income
from mtl.data import census_income_builder as cib

RAW = {'train': 'census-income.data.gz', 'test': 'census-income.test.gz'}


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='session')
def first_load(tfds_dir, data_dir):
  # `data_dir` makes sure $MTL_DATA_DIR is set: the default manual_dir.
  start = time.perf_counter()
  ds = census_income.load_census_income(data_dir=tfds_dir)
  return ds, time.perf_counter() - start


@pytest.fixture(scope='session')
def paper(first_load):
  return first_load[0]


@pytest.fixture(scope='session')
def library(first_load, tfds_dir):
  return census_income.load_census_income(protocol='library', data_dir=tfds_dir)


@pytest.fixture(scope='session')
def raw(data_dir):
  """The raw UCI files, read here as the oracle (strings, '?' kept)."""
  return {
    split: pd.read_csv(
      data_dir / 'census-income-kdd' / name,
      header=None,
      skipinitialspace=True,
      dtype=str,
      keep_default_na=False,
    )
    for split, name in RAW.items()
  }


def _raw_lines(data_dir, n):
  with gzip.open(data_dir / 'census-income-kdd' / RAW['train'], 'rt') as f:
    return [next(f).rstrip('\n') for _ in range(n)]


def _write_gz(path, lines):
  with gzip.open(path, 'wt') as f:
    f.write('\n'.join(lines) + '\n')
  return path


def _set_field(line, column, value):
  fields = line.split(', ')
  fields[column] = value
  return ', '.join(fields)


def _labels(ds, split, task):
  return ds.splits[split]['labels'][[t.name for t in ds.tasks].index(task)]


def test_row_counts(paper):
  rows = {s: paper.num_rows(s) for s in paper.splits}
  assert rows == {'train': 199_523, 'validation': 49_881, 'test': 49_881}
  assert paper.stats['rows'] == rows


def test_label_counts_match_the_readme(paper):
  assert _labels(paper, 'train', 'income').sum() == 12_382
  assert _labels(paper, 'train', 'marital').sum() == 86_485
  held_out = ('validation', 'test')
  assert sum(_labels(paper, s, 'income').sum() for s in held_out) == 6_186
  assert sum(_labels(paper, s, 'marital').sum() for s in held_out) == 43_143
  rate = paper.stats['positive_rate']['train']['income']
  assert rate == pytest.approx(12_382 / 199_523)


def test_validation_and_test_are_the_uci_test_rows(paper, raw):
  age = paper.stats['dense_normalisers']['age']
  held_out = np.concatenate(
    [paper.splits[s]['dense'][:, 0] for s in ('validation', 'test')]
  )
  ages = np.rint(held_out.astype(np.float64) * age['std'] + age['mean'])
  want = np.sort(raw['test'][0].astype(float).to_numpy())
  np.testing.assert_array_equal(np.sort(ages), want)


def test_train_rows_decode_back_to_the_raw_file(library, raw):
  train = library.splits['train']
  for name in ('sex', 'education', 'year', 'state_of_previous_residence'):
    column = raw['train'][cib.COLUMNS.index(name)]
    vocab = sorted(column.unique())
    want = column.map({v: i + 1 for i, v in enumerate(vocab)}).to_numpy()
    got = train['sparse'][:, library.sparse_names.index(name)]
    np.testing.assert_array_equal(got, want, err_msg=name)
  age = library.stats['dense_normalisers']['age']
  ages = train['dense'][:, 0].astype(np.float64) * age['std'] + age['mean']
  np.testing.assert_array_equal(
    np.rint(ages), raw['train'][0].astype(float).to_numpy()
  )


def test_vocab_sizes_are_training_values_plus_oov(library, raw):
  for name, size in zip(library.sparse_names, library.vocab_sizes, strict=True):
    assert size == raw['train'][cib.COLUMNS.index(name)].nunique() + 1, name
  assert library.stats['vocab_sizes']['sex'] == 3


def test_value_seen_only_outside_training_maps_to_oov(
  tmp_path, data_dir, monkeypatch
):
  # A fake raw pair whose test file holds a country missing from train,
  # prepared through TFDS like the real files.
  lines = _raw_lines(data_dir, 6)
  country = cib.COLUMNS.index('country_of_birth_self')
  manual = tmp_path / 'manual'
  manual.mkdir()
  _write_gz(manual / RAW['train'], lines)
  test_lines = [_set_field(lines[0], country, 'Atlantis')] + lines[1:]
  _write_gz(manual / RAW['test'], test_lines)
  # Register the fake files' checksums so that TFDS accepts them.
  fake = {
    url: checksums.compute_url_info(manual / RAW[split])
    for split, url in cib.URLS.items()
  }
  monkeypatch.setattr(cib.CensusIncome, 'url_infos', fake)
  builder = census_income.prepare(manual_dir=manual, data_dir=tmp_path / 'p')
  vocab = builder.info.metadata['vocabularies']['country_of_birth_self']
  assert 'Atlantis' not in vocab
  ids = census_income.read_prepared(builder)['test']['categorical']
  j = cib.CATEGORICAL.index('country_of_birth_self')
  assert ids[0, j] == 0
  assert (np.delete(ids, j, axis=1) > 0).all() and (ids[1:] > 0).all()


def test_protocol_inputs(paper, library, tfds_dir):
  for ds in (paper, library):
    assert ds.dense_names == cib.DENSE and len(ds.dense_names) == 7
    for never in ('marital_stat', 'instance_weight', 'income'):
      assert never not in ds.sparse_names + ds.dense_names
  assert 'education' not in paper.sparse_names
  assert len(paper.sparse_names) == 31
  assert 'education' in library.sparse_names
  assert len(library.sparse_names) == 32
  # Group 2's label is education: keeping it as an input would leak it.
  group2 = census_income.load_census_income(
    protocol='library', task_group=2, data_dir=tfds_dir
  )
  assert 'education' not in group2.sparse_names
  assert group2.sparse_names == paper.sparse_names


def test_task_group_2(tfds_dir):
  ds = census_income.load_census_income(task_group=2, data_dir=tfds_dir)
  assert [t.name for t in ds.tasks] == ['education', 'marital']
  assert {t.kind for t in ds.tasks} == {'binary'}
  # Associates (5,358 + 4,363), Bachelors 19,865, Masters 6,541,
  # Prof school 1,793, Doctorate 1,263 in the README's value counts.
  assert _labels(ds, 'train', 'education').sum() == 39_183


def test_dense_train_features_are_standardised(paper):
  dense = paper.splits['train']['dense'].astype(np.float64)
  np.testing.assert_allclose(dense.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(dense.std(0), 1.0, atol=1e-4)
  assert paper.stats['dense_normalisers']['capital_gains']['log1p']
  assert not paper.stats['dense_normalisers']['age']['log1p']


def test_deterministic_and_seeded_split(paper, tfds_dir):
  again = census_income.load_census_income(data_dir=tfds_dir)
  for split, arrays in paper.splits.items():
    for key, value in arrays.items():
      np.testing.assert_array_equal(value, again.splits[split][key])
  other = census_income.load_census_income(data_dir=tfds_dir, split_seed=1)
  np.testing.assert_array_equal(
    other.splits['train']['sparse'], paper.splits['train']['sparse']
  )
  assert not np.array_equal(
    other.splits['validation']['dense'], paper.splits['validation']['dense']
  )
  held_out = sum(
    _labels(other, s, 'income').sum() for s in ('validation', 'test')
  )
  assert held_out == 6_186


def test_second_load_reads_the_cache(first_load, tfds_dir, tmp_path):
  ds, first_seconds = first_load
  assert (tmp_path / 'none').exists() is False
  start = time.perf_counter()
  # Prepared data needs no raw files: a manual_dir that does not exist is fine.
  cached = census_income.load_census_income(
    data_dir=tfds_dir, manual_dir=tmp_path / 'none'
  )
  seconds = time.perf_counter() - start
  assert cached.stats['prepared_dir'] == ds.stats['prepared_dir']
  assert str(tfds_dir) in ds.stats['prepared_dir']
  assert (tfds_dir / 'census_income' / '1.0.0' / 'dataset_info.json').is_file()
  assert seconds < min(5.0, first_seconds)


def _error(exc_type, fn, **kwargs) -> str:
  with pytest.raises(exc_type) as err:
    fn(**kwargs)
  message = str(err.value)
  assert '\n' not in message
  return message


def test_missing_manual_dir(tmp_path):
  manual = tmp_path / 'nowhere'
  message = _error(
    FileNotFoundError,
    census_income.load_census_income,
    manual_dir=manual,
    data_dir=tmp_path / 'tfds',
  )
  assert message.startswith('census_income: raw file(s) not found: ')
  for name in RAW.values():
    assert str(manual / name) in message
    assert cib.URLS['train'] in message and cib.URLS['test'] in message
  assert 'sha256 3a8265c042a3a804761b804e3fbd2b44d26780fc11848' in message


def test_no_manual_dir_and_no_environment(tmp_path, monkeypatch):
  monkeypatch.delenv('MTL_DATA_DIR', raising=False)
  message = _error(
    census_income.RawFilesMissingError,
    census_income.load_census_income,
    data_dir=tmp_path / 'tfds',
  )
  assert 'neither manual_dir nor $MTL_DATA_DIR is set' in message


def test_raw_file_that_is_not_the_registered_one(tmp_path, data_dir):
  manual = tmp_path / 'manual'
  manual.mkdir()
  for name in RAW.values():
    _write_gz(manual / name, _raw_lines(data_dir, 5))
  message = _error(
    census_income.DataError,
    census_income.load_census_income,
    manual_dir=manual,
    data_dir=tmp_path / 'tfds',
  )
  assert message.startswith(
    f'census_income: a raw file in {manual} is not the registered UCI file'
  )
  assert 'wrong checksum' in message


@pytest.mark.parametrize('extra', [-1, 1])
def test_row_with_the_wrong_number_of_columns(tmp_path, data_dir, extra):
  lines = _raw_lines(data_dir, 5)
  fields = lines[2].split(', ')
  lines[2] = ', '.join(fields[:-1] if extra < 0 else fields + ['x'])
  path = _write_gz(tmp_path / 'bad.gz', lines)
  message = _error(cib.DataError, cib.read_raw, path=path)
  assert message == (
    f'{path}: row 3 has {42 + extra} columns, '
    'expected 42 comma-separated columns'
  )


def test_file_with_41_columns_everywhere(tmp_path, data_dir):
  lines = [line.rsplit(', ', 1)[0] for line in _raw_lines(data_dir, 4)]
  path = _write_gz(tmp_path / 'short.gz', lines)
  message = _error(cib.DataError, cib.read_raw, path=path)
  assert message == (
    f'{path}: row 1 has 41 columns, expected 42 comma-separated columns'
  )


def test_bad_values(tmp_path, data_dir):
  lines = _raw_lines(data_dir, 4)
  lines[1] = _set_field(lines[1], 0, 'old')
  path = _write_gz(tmp_path / 'age.gz', lines)
  message = _error(cib.DataError, cib.read_raw, path=path)
  assert message == f"{path}: row 2 column 'age' is 'old', expected a number"
  lines = _raw_lines(data_dir, 4)
  lines[3] = _set_field(lines[3], 41, 'rich.')
  path = _write_gz(tmp_path / 'label.gz', lines)
  message = _error(cib.DataError, cib.read_raw, path=path)
  assert message == (
    f"{path}: row 4 income label is 'rich.', "
    "expected one of ('- 50000.', '50000+.')"
  )


def test_unknown_protocol():
  message = _error(
    ValueError, census_income.load_census_income, protocol='kaggle'
  )
  assert message == (
    "census_income: unknown protocol 'kaggle', expected one of "
    "('paper', 'library')"
  )


def test_unknown_task_group():
  message = _error(ValueError, census_income.load_census_income, task_group=3)
  assert message == (
    'census_income: unknown task_group 3, expected one of (1, 2)'
  )
