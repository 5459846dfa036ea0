"""Binned in-program AUC against scikit-learn's exact AUC."""

import jax.numpy as jnp
import numpy as np
from sklearn.metrics import roc_auc_score

from mtl.core import metrics


def _scores(rng, n, signal, base_rate):
  labels = (rng.random(n) < base_rate).astype(np.float32)
  logits = rng.normal(size=n) + signal * labels - 3.0
  return 1 / (1 + np.exp(-logits)), labels


def test_binned_auc_within_1e3_of_sklearn():
  rng = np.random.default_rng(0)
  rows = [_scores(rng, 20_000, s, r) for s, r in ((2.0, 0.06), (0.5, 0.4))]
  scores = np.stack([r[0] for r in rows]).astype(np.float32)
  labels = np.stack([r[1] for r in rows])
  mask = np.ones_like(labels)
  pos, neg = metrics.auc_counts(scores, labels, mask)
  got = metrics.auc_from_counts(np.asarray(pos), np.asarray(neg))
  for t in range(2):
    exact = roc_auc_score(labels[t], scores[t])
    assert abs(got[t] - exact) < 1e-3, (t, got[t], exact)
  # The in-program (jax, float32) form agrees with the host form.
  np.testing.assert_allclose(metrics.auc_from_counts(pos, neg), got, atol=1e-5)


def test_counts_respect_mask_and_sum_over_batches():
  rng = np.random.default_rng(1)
  s, y = _scores(rng, 1000, 1.0, 0.3)
  scores, labels = s[None].astype(np.float32), y[None]
  mask = (rng.random((1, 1000)) > 0.2).astype(np.float32)
  pos, neg = metrics.auc_counts(scores, labels, mask)
  assert int(pos.sum()) == int(((labels > 0) & (mask > 0)).sum())
  assert int(neg.sum()) == int(((labels == 0) & (mask > 0)).sum())
  p1, n1 = metrics.auc_counts(scores[:, :600], labels[:, :600], mask[:, :600])
  p2, n2 = metrics.auc_counts(scores[:, 600:], labels[:, 600:], mask[:, 600:])
  np.testing.assert_array_equal(p1 + p2, pos)
  np.testing.assert_array_equal(n1 + n2, neg)
  keep = mask[0] > 0
  exact = roc_auc_score(labels[0][keep], scores[0][keep])
  got = metrics.auc_from_counts(np.asarray(pos), np.asarray(neg))[0]
  assert abs(got - exact) < 1e-3


def test_hand_computed_auc_with_ties():
  # Positives at 0.9 and 0.5, negatives at 0.5 and 0.1: of 4 pairs, 3 wins
  # and one tie -> (3 + 0.5) / 4.
  scores = jnp.array([[0.9, 0.5, 0.5, 0.1]])
  labels = jnp.array([[1.0, 1.0, 0.0, 0.0]])
  pos, neg = metrics.auc_counts(scores, labels, jnp.ones_like(labels))
  got = metrics.auc_from_counts(np.asarray(pos), np.asarray(neg))
  assert got[0] == 0.875


def test_auc_is_nan_without_both_classes():
  scores = jnp.array([[0.2, 0.4]])
  labels = jnp.array([[1.0, 1.0]])
  pos, neg = metrics.auc_counts(scores, labels, jnp.ones_like(labels))
  assert np.isnan(metrics.auc_from_counts(np.asarray(pos), np.asarray(neg))[0])
