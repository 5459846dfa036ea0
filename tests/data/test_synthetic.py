"""Tests for the MMoE synthetic generator (mtl/data/synthetic.py)."""

import numpy as np
import pytest

from mtl.data import DATASETS, synthetic
from mtl.errors import ConfigError


@pytest.mark.parametrize('p', [-0.3, 0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize('c', [1.0, 2.5])
def test_task_vectors_have_cosine_p_and_norm_c(p, c):
  w1, w2 = synthetic.task_weights(p=p, c=c, d=100, seed=3)
  cosine = w1 @ w2 / np.linalg.norm(w1) / np.linalg.norm(w2)
  assert cosine == pytest.approx(p, abs=1e-6)
  assert np.linalg.norm(w1) == pytest.approx(c, rel=1e-9)
  assert np.linalg.norm(w2) == pytest.approx(c, rel=1e-9)


def test_dataset_layout_and_stats():
  ds = DATASETS['synthetic'](d=8, n_train=50, n_validation=20, n_test=30)
  assert [t.name for t in ds.tasks] == ['y1', 'y2']
  assert {t.kind for t in ds.tasks} == {'regression'}
  assert ds.dense_names == tuple(f'x{i}' for i in range(8))
  assert ds.sparse_names == () and ds.vocab_sizes == ()
  rows = {s: ds.num_rows(s) for s in ds.splits}
  assert rows == {'train': 50, 'validation': 20, 'test': 30}
  train = ds.splits['train']
  assert train['sparse'].shape == (50, 0) and train['sparse'].dtype == np.int32
  assert (train['mask'] == 1).all()
  assert ds.stats['cos_w1_w2'] == pytest.approx(0.5, abs=1e-6)


def test_labels_follow_the_generator_formula():
  # Independent recomputation of y_k = w_k.x + sum_i sin(a_i w_k.x + b_i).
  alpha, beta = [0.5, 2.0, 3.0], [1.0, -1.0, 0.25]
  ds = synthetic.load_synthetic(
    p=0.7,
    c=1.5,
    m=3,
    alpha=alpha,
    beta=beta,
    d=6,
    n_train=40,
    n_validation=5,
    n_test=5,
    noise_std=0.0,
    seed=11,
  )
  w = synthetic.task_weights(p=0.7, c=1.5, d=6, seed=11)
  x = ds.splits['train']['dense'].astype(np.float64)
  for k in range(2):
    z = x @ w[k]
    want = z + sum(np.sin(a * z + b) for a, b in zip(alpha, beta, strict=True))
    np.testing.assert_allclose(ds.splits['train']['labels'][k], want, atol=1e-4)


def test_defaults_are_alpha_i_and_beta_i_squared():
  ds = synthetic.load_synthetic(m=4, d=4, n_train=10, n_validation=5, n_test=5)
  assert ds.stats['alpha'] == [1.0, 2.0, 3.0, 4.0]
  assert ds.stats['beta'] == [1.0, 4.0, 9.0, 16.0]


@pytest.mark.parametrize('p', [0.0, 0.5, 0.9])
def test_without_sines_label_correlation_is_p(p):
  ds = synthetic.load_synthetic(p=p, m=0, noise_std=0.01, n_train=20_000)
  y1, y2 = ds.splits['train']['labels'].astype(np.float64)
  assert np.corrcoef(y1, y2)[0, 1] == pytest.approx(p, abs=0.03)


def test_label_correlation_curve():
  ps = [0.0, 0.5, 0.9, 1.0]
  curve = synthetic.label_correlation(ps, n=5_000)
  assert curve.shape == (4,)
  assert np.all(np.diff(curve) > 0)  # more task correlation, more label corr
  assert curve[-1] == pytest.approx(1.0, abs=0.01)
  # The sines make the labels far less correlated than the tasks (Fig. 2).
  assert curve[1] < 0.3 and curve[2] < 0.6
  np.testing.assert_array_equal(curve, synthetic.label_correlation(ps, n=5_000))
  no_sines = synthetic.label_correlation(ps, m=0, noise_std=0.0, n=5_000)
  np.testing.assert_allclose(no_sines, ps, atol=0.03)


def test_deterministic_by_seed_and_different_across_seeds():
  kwargs = dict(d=5, n_train=100, n_validation=10, n_test=10)
  a = synthetic.load_synthetic(seed=1, **kwargs)
  b = synthetic.load_synthetic(seed=1, **kwargs)
  c = synthetic.load_synthetic(seed=2, **kwargs)
  for split in a.splits:
    for key in a.splits[split]:
      np.testing.assert_array_equal(a.splits[split][key], b.splits[split][key])
  assert not np.array_equal(
    a.splits['train']['dense'], c.splits['train']['dense']
  )
  assert not np.array_equal(
    a.splits['train']['labels'], c.splits['train']['labels']
  )


def test_split_rows_do_not_depend_on_other_split_sizes():
  a = synthetic.load_synthetic(d=4, n_train=30, n_validation=10, n_test=10)
  b = synthetic.load_synthetic(d=4, n_train=30, n_validation=99, n_test=7)
  np.testing.assert_array_equal(
    a.splits['train']['dense'], b.splits['train']['dense']
  )


@pytest.mark.parametrize(
  'kwargs, message',
  [
    (dict(p=1.5), 'synthetic: p is 1.5, expected -1 <= p <= 1'),
    (
      dict(m=3, alpha=[1.0, 2.0]),
      'synthetic: alpha has shape [2], expected [3] (m=3)',
    ),
    (dict(m=-1), 'synthetic: m is -1, expected m >= 0'),
    (dict(d=1), 'synthetic: d is 1, expected d >= 2'),
  ],
)
def test_bad_arguments(kwargs, message):
  with pytest.raises(ConfigError) as err:
    synthetic.load_synthetic(**kwargs)
  assert str(err.value) == message


def test_unknown_keyword_is_a_config_error_naming_it():
  with pytest.raises(ConfigError) as err:
    DATASETS['synthetic'](n_trian=50)
  assert str(err.value).startswith(
    "dataset 'synthetic' got unexpected keyword 'n_trian' (did you mean "
    "'n_train'?): it takes p, c, m, "
  )
