"""Binned in-program AUC against scikit-learn's exact AUC."""

import functools
import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mtl.core import metrics

# Unit-variance Gaussian logits this far apart: AUC = Phi(d / sqrt 2) ~ 0.80.
SEPARATION = 1.19
BASE_RATES = (1e-1, 1e-2, 1e-3, 1e-4)
ROWS = 3_000_000  # 300 positives at 1e-4


def _config_bins() -> list[int]:
  """The distinct num_auc_bins of configs/*.py (default arguments) and the
  library default."""
  values = {metrics.DEFAULT_BINS}
  root = pathlib.Path(__file__).parents[2] / 'configs'
  for path in sorted(root.glob('*.py')):
    module = importlib.import_module(f'configs.{path.stem}')
    if hasattr(module, 'get_config'):
      values.add(module.get_config().num_auc_bins)
  return sorted(values)


CONFIG_BINS = _config_bins()


def _logits(rng, n, signal, base_rate):
  labels = (rng.random(n) < base_rate).astype(np.float32)
  return rng.normal(size=n) + signal * labels - 3.0, labels


@functools.cache
def _real_rate_split(base_rate):
  """ROWS logits with round(ROWS * base_rate) positives, the negatives
  centred on the base rate's logit, and scikit-learn's exact AUC."""
  rng = np.random.default_rng(14)
  labels = np.zeros(ROWS, np.float32)
  labels[: round(ROWS * base_rate)] = 1.0
  centre = np.log(base_rate / (1 - base_rate))
  noise = rng.standard_normal(ROWS, np.float32)
  logits = noise + np.float32(centre) + np.float32(SEPARATION) * labels
  return logits, labels, roc_auc_score(labels, logits)


# Jitted: op by op, every op of auc_counts compiles on its own for every
# input shape (the small tests below were ~1-2 s each, nearly all compiling).
_auc_counts = jax.jit(metrics.auc_counts, static_argnames='num_bins')
# The in-program (jax, float32) form, as the step computes it.
_auc_in_program = jax.jit(metrics.auc_from_counts)


@pytest.mark.parametrize('num_bins', CONFIG_BINS)
@pytest.mark.parametrize('base_rate', BASE_RATES)
def test_auc_within_1e4_of_sklearn_at_real_base_rates(base_rate, num_bins):
  # Conversion and CTCVR rates in real logs are 1e-3 to 1e-4: the scores
  # crowd near probability 0, where the error must not grow.
  logits, labels, exact = _real_rate_split(base_rate)
  assert 0.78 < exact < 0.82
  ones = np.ones((1, ROWS), np.float32)
  pos, neg = _auc_counts(logits[None], labels[None], ones, num_bins=num_bins)
  got = metrics.auc_from_counts(np.asarray(pos), np.asarray(neg))[0]
  assert abs(got - exact) < 1e-4, (got, exact)


def test_binned_auc_within_1e4_of_sklearn():
  rng = np.random.default_rng(0)
  rows = [_logits(rng, 20_000, s, r) for s, r in ((2.0, 0.06), (0.5, 0.4))]
  logits = np.stack([r[0] for r in rows]).astype(np.float32)
  labels = np.stack([r[1] for r in rows])
  mask = np.ones_like(labels)
  pos, neg = _auc_counts(logits, labels, mask)
  got = metrics.auc_from_counts(np.asarray(pos), np.asarray(neg))
  for t in range(2):
    exact = roc_auc_score(labels[t], logits[t])
    assert abs(got[t] - exact) < 1e-4, (t, got[t], exact)
  # The in-program (jax, float32) form agrees with the host form.
  in_program = _auc_in_program(pos, neg)
  assert in_program.dtype == jnp.float32
  np.testing.assert_allclose(in_program, got, atol=1e-5)


def test_counts_respect_mask_and_sum_over_batches():
  rng = np.random.default_rng(1)
  s, y = _logits(rng, 1000, 1.0, 0.3)
  logits, labels = s[None].astype(np.float32), y[None]
  mask = (rng.random((1, 1000)) > 0.2).astype(np.float32)
  pos, neg = jax.device_get(_auc_counts(logits, labels, mask))
  assert int(pos.sum()) == int(((labels > 0) & (mask > 0)).sum())
  assert int(neg.sum()) == int(((labels == 0) & (mask > 0)).sum())
  # Two halves of one shape: one more program to compile, not two.
  p1, n1 = jax.device_get(
    _auc_counts(logits[:, :500], labels[:, :500], mask[:, :500])
  )
  p2, n2 = jax.device_get(
    _auc_counts(logits[:, 500:], labels[:, 500:], mask[:, 500:])
  )
  np.testing.assert_array_equal(p1 + p2, pos)
  np.testing.assert_array_equal(n1 + n2, neg)
  keep = mask[0] > 0
  exact = roc_auc_score(labels[0][keep], logits[0][keep])
  got = metrics.auc_from_counts(np.asarray(pos), np.asarray(neg))[0]
  assert abs(got - exact) < 1e-3


def test_logits_beyond_the_range_count_in_the_end_bins():
  logits = np.float32([[-1e4, -25.0, 0.0, 25.0, 1e4]])
  labels = np.float32([[0.0, 1.0, 0.0, 1.0, 0.0]])
  pos, neg = jax.device_get(
    _auc_counts(logits, labels, np.ones_like(labels), num_bins=64)
  )
  np.testing.assert_array_equal(np.nonzero(pos[0])[0], [0, 63])
  np.testing.assert_array_equal(np.nonzero(neg[0])[0], [0, 32, 63])


def test_hand_computed_auc_with_ties():
  # Positives at logits 2 and 0, negatives at 0 and -2: of 4 pairs, 3 wins
  # and one tie -> (3 + 0.5) / 4.
  logits = np.float32([[2.0, 0.0, 0.0, -2.0]])
  labels = np.float32([[1.0, 1.0, 0.0, 0.0]])
  pos, neg = _auc_counts(logits, labels, np.ones_like(labels))
  got = metrics.auc_from_counts(np.asarray(pos), np.asarray(neg))
  assert got[0] == 0.875


def test_auc_is_nan_without_both_classes():
  logits = np.float32([[-1.0, 0.5]])
  labels = np.float32([[1.0, 1.0]])
  pos, neg = _auc_counts(logits, labels, np.ones_like(labels))
  assert np.isnan(metrics.auc_from_counts(np.asarray(pos), np.asarray(neg))[0])
