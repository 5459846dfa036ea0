"""Tests for the Dataset layout checks (mtl/data/dataset.py, check_split)."""

import numpy as np
import pytest

from mtl.core.tasks import Task
from mtl.data.dataset import Dataset
from mtl.errors import DataError


def _split(n=4):
  return {
    'dense': np.zeros((n, 2), np.float32),
    'sparse': np.ones((n, 1), np.int32),
    'labels': np.array([[0, 1, 0, 1], [0.5, 2.0, -1.0, 3.0]], np.float32),
    'mask': np.ones((2, n), np.float32),
  }


def _dataset(split, name='train', stats=None):
  return Dataset(
    name='toy',
    tasks=(Task('click'), Task('dwell', 'regression')),
    dense_names=('d0', 'd1'),
    sparse_names=('s0',),
    vocab_sizes=(3,),
    splits={name: split},
    stats=stats or {},
  )


def _message(split) -> str:
  with pytest.raises(DataError) as err:
    _dataset(split)
  message = str(err.value)
  assert '\n' not in message
  return message


def test_valid_split_passes():
  ds = _dataset(_split())
  assert ds.num_tasks == 2 and ds.num_rows('train') == 4


def test_labels_all_one_class():
  split = _split()
  split['labels'][0] = 1.0
  assert _message(split) == (
    "dataset 'toy' split 'train': task 'click' labels are all 1 (4 rows), "
    'expected both classes'
  )


def test_one_class_in_a_process_share_of_train_is_allowed():
  # A multi-host loader's share of the training rows may miss a rare class
  # the whole split has; the other splits are read whole and still judged.
  split = _split()
  split['labels'][0] = 1.0
  share = {'share': {'process_index': 1, 'process_count': 2}}
  assert _dataset(split, stats=share).num_rows('train') == 4
  with pytest.raises(ValueError, match="split 'test'.*expected both classes"):
    _dataset(split, name='test', stats=share)


def test_one_class_among_the_masked_rows_only():
  split = _split()
  split['mask'][0] = [1, 0, 1, 0]  # the rows left in are both label 0
  assert _message(split).endswith(
    "task 'click' labels are all 0 (2 rows), expected both classes"
  )


def test_non_binary_label():
  split = _split()
  split['labels'][0, 2] = 0.5
  assert _message(split) == (
    "dataset 'toy' split 'train': task 'click' is binary but has label 0.5, "
    'expected 0 or 1'
  )


def test_non_binary_label_is_ignored_where_masked_and_for_regression():
  split = _split()
  split['labels'][0, 3] = 7.0
  split['mask'][0, 3] = 0.0
  _dataset(split)  # regression task 'dwell' already has labels 0.5, 2, -1, 3


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_non_finite_dense_feature(bad):
  split = _split()
  split['dense'][2, 1] = bad
  assert _message(split) == (
    f"dataset 'toy' split 'train': dense feature 'd1' row 2 is {bad}, "
    'expected a finite number'
  )


def test_sparse_id_out_of_range():
  split = _split()
  split['sparse'][1, 0] = 3
  assert _message(split) == (
    "dataset 'toy' split 'train': sparse feature 's0' row 1 has id 3, "
    'expected [0, 3)'
  )


def test_wrong_dtype_and_missing_array():
  split = _split()
  split['dense'] = split['dense'].astype(np.float64)
  assert _message(split) == (
    "dataset 'toy' split 'train': dense is float64[4, 2], "
    'expected float32[4, 2]'
  )
  split = _split()
  del split['mask']
  assert _message(split) == "dataset 'toy' split 'train': missing array 'mask'"
