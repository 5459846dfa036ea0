"""Tests for the label-leakage guard (mtl/data/leakage.py) on real datasets.

A label column (or a transformed copy) injected into a real training split
must raise, naming the feature and the task; the real splits unmodified, and
ordinary features (ids, noisy or weakly correlated copies, a lone positive)
must not.
"""

import numpy as np
import pandas as pd
import pytest

from configs import ali_ccp, aliexpress, movielens
from mtl.data import DATASETS
from mtl.data.leakage import check_no_label_leakage
from mtl.errors import DataError


def _table(module, data_dir, **overrides):
  """A config's table; for a click/conversion one `impression` drops the
  conversion task's click sample space: its label then counts on every
  impression, which is CTCVR, as conversions follow clicks in the samples."""
  config = module.get_config().dataset.to_dict()
  if overrides.pop('impression', False):
    conversion = config['task_order'][1]
    del config['tasks'][conversion]['where']
  return DATASETS['table'](**{**config, 'data_dir': str(data_dir), **overrides})


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return tmp_path_factory.getbasetemp() / 'tfds-shared'


@pytest.fixture(scope='module')
def datasets(tfds_dir, data_dir):
  return {
    'ali_ccp': _table(ali_ccp, tfds_dir),
    'ali_ccp ctcvr': _table(ali_ccp, tfds_dir, impression=True),
    'aliexpress': _table(aliexpress, tfds_dir),
    'aliexpress ctcvr': _table(aliexpress, tfds_dir, impression=True),
    'movielens': _table(movielens, tfds_dir),
  }


def _check(ds, dense_extra=None, sparse_extra=None, at=0):
  """Runs the guard on the training split with extra columns inserted."""
  train = ds.splits['train']
  dense, sparse = train['dense'], train['sparse']
  dense_names, sparse_names = list(ds.dense_names), list(ds.sparse_names)
  if dense_extra is not None:
    dense = np.insert(dense, at, dense_extra.astype(np.float32), axis=1)
    dense_names.insert(at, 'injected')
  if sparse_extra is not None:
    sparse = np.insert(sparse, at, sparse_extra.astype(np.int32), axis=1)
    sparse_names.insert(at, 'injected')
  check_no_label_leakage(
    dense,
    sparse,
    train['labels'],
    train['mask'],
    dense_names + sparse_names,
    [t.name for t in ds.tasks],
    where=f'{ds.name} train',
  )


def _leak_message(ds, **extra) -> str:
  with pytest.raises(DataError) as err:
    _check(ds, **extra)
  message = str(err.value)
  assert '\n' not in message
  return message


def test_real_training_splits_pass(datasets):
  for ds in datasets.values():
    _check(ds)


TRANSFORMS = {
  'copy': lambda y: y,
  'one minus': lambda y: 1 - y,
  'times seven': lambda y: 7 * y,
  'affine': lambda y: -3.5 * y + 0.25,
  'squared shifted': lambda y: (y - 0.3) ** 2,
}


@pytest.mark.parametrize('transform', TRANSFORMS)
def test_click_copies_are_caught_in_ali_ccp(datasets, transform):
  ds = datasets['ali_ccp']
  click = ds.splits['train']['labels'][0]
  message = _leak_message(ds, dense_extra=TRANSFORMS[transform](click), at=3)
  assert message.startswith(
    "ali_ccp train: feature 'injected' is a deterministic function of the "
    "label of task 'click' on its 100 rows"
  )
  assert 'chance probability under independence <= 2.5e-10' in message


def test_category_id_of_the_label_class(datasets):
  ds = datasets['aliexpress']
  click = ds.splits['train']['labels'][0]
  message = _leak_message(ds, sparse_extra=click + 2, at=5)
  assert "feature 'injected'" in message and "task 'click'" in message
  assert '0 -> 2, 1 -> 3' in message


def test_rating_and_like_copies_are_caught_in_movielens(datasets):
  ds = datasets['movielens']
  rating, like = ds.splits['train']['labels']
  mean = ds.stats['label_normalisers']['rating']['mean']
  stars = np.rint(rating + mean).astype(int)
  for name, extra, task in [
    ('rating', {'dense_extra': rating}, 'rating'),
    ('stars as ids', {'sparse_extra': stars}, 'rating'),
    ('rating * 7', {'dense_extra': rating * 7}, 'rating'),
    # like = (rating >= 4): a many-to-one function of the rating.
    ('like', {'sparse_extra': like}, 'rating'),
    ('1 - like', {'dense_extra': 1 - like}, 'rating'),
  ]:
    message = _leak_message(ds, **extra)
    want = f'deterministic function of the label of task {task!r}'
    assert message.startswith("movielens_100k train: feature 'injected' is a")
    assert want in message, name


def test_ordinary_features_do_not_trigger(datasets):
  rng = np.random.default_rng(0)
  ds = datasets['movielens']
  rating, like = ds.splits['train']['labels']
  n = len(like)
  _check(ds, dense_extra=rating + rng.normal(0, 0.5, n))  # noisy copy
  _check(ds, dense_extra=like + rng.normal(0, 2.0, n))  # weak correlation
  _check(ds, sparse_extra=np.arange(n))  # a unique row id
  _check(ds, sparse_extra=rng.integers(0, 1_000_000, n))  # huge-vocab id
  flipped = like.copy()
  flipped[17] = 1 - flipped[17]  # all but one row
  _check(ds, sparse_extra=flipped)
  # Ali-CCP has one purchase among 100 impressions: a lone positive is no
  # evidence (chance 4/100), so even its exact copy is not reported.
  ctcvr = datasets['ali_ccp ctcvr']
  purchase = ctcvr.splits['train']['labels'][1]
  assert purchase.sum() == 1
  _check(ctcvr, dense_extra=purchase)
  # In the click space the purchase task has 7 rows: also too few.
  _check(datasets['ali_ccp'], dense_extra=ctcvr.splits['train']['labels'][1])


def test_mask_restricts_the_check_to_the_sample_space():
  rng = np.random.default_rng(1)
  n = 400
  click = (rng.random(n) < 0.5).astype(np.float32)
  conversion = (rng.random(n) < 0.5).astype(np.float32)
  labels = np.stack([click, conversion])
  mask = np.stack([np.ones(n), click]).astype(np.float32)
  # Equal to the conversion on clicked rows, noise elsewhere: a leak there.
  feature = np.where(click > 0, conversion, rng.random(n))
  with pytest.raises(
    ValueError, match="of the label of task 'conversion' on its"
  ):
    check_no_label_leakage(
      feature[:, None],
      np.zeros((n, 0), np.int32),
      labels,
      mask,
      ['f'],
      ['click', 'conversion'],
    )
  with pytest.raises(ValueError, match='1 feature names for 2 feature'):
    check_no_label_leakage(
      np.zeros((n, 2)), np.zeros((n, 0)), labels, mask, ['f'], ['a', 'b']
    )


def test_loader_rejects_a_raw_file_with_a_label_copy(tmp_path, data_dir):
  # Column 301 (constant in the sample) overwritten with the click label.
  manual = tmp_path / 'full'
  manual.mkdir()
  for key in ('path', 'validation_path', 'test_path'):
    sample = ali_ccp.VARIANTS['sample'][key]
    frame = pd.read_csv(data_dir / 'ali-ccp-sample' / sample)
    frame['301'] = frame['click']
    frame.to_csv(manual / ali_ccp.VARIANTS['full'][key], index=False)
  with pytest.raises(ValueError) as err:
    _table(ali_ccp, tmp_path / 'tfds', variant='full', manual_dir=str(manual))
  assert str(err.value).startswith(
    "ali_ccp train: feature '301' is a deterministic function of the label "
    "of task 'click' on its 100 rows (label -> feature: 0 -> 2, 1 -> 3;"
  )
