"""Bagging: per-example loss weights and Poisson bootstrap weights."""

import jax.numpy as jnp
import numpy as np

from mtl.core import losses
from mtl.core.tasks import Task

TASKS = (Task('a', 'binary'), Task('b', 'regression'))


def test_weighted_loss_is_the_loss_of_repeated_rows():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 9)).astype(np.float32)
  labels = np.stack([rng.integers(0, 2, 9), rng.normal(size=9)]).astype(
    np.float32
  )
  mask = (rng.random((2, 9)) > 0.2).astype(np.float32)
  w = np.array([0, 1, 2, 3, 1, 0, 1, 4, 1], np.float32)
  sums, counts = losses.masked_loss_sums(
    logits, labels, mask, tasks=TASKS, weights=jnp.asarray(w)
  )
  rep = np.repeat(np.arange(9), w.astype(int))
  want_s, want_c = losses.masked_loss_sums(
    logits[:, rep], labels[:, rep], mask[:, rep], tasks=TASKS
  )
  np.testing.assert_allclose(sums, want_s, rtol=1e-5)
  np.testing.assert_allclose(counts, want_c)


def test_no_weights_is_unchanged_and_nan_in_dropped_rows_never_leaks():
  logits = np.array([[0.5, np.nan], [1.0, np.inf]], np.float32)
  labels = np.ones((2, 2), np.float32)
  mask = np.ones((2, 2), np.float32)
  sums, counts = losses.masked_loss_sums(
    logits, labels, mask, tasks=TASKS, weights=jnp.asarray([2.0, 0.0])
  )
  one, _ = losses.masked_loss_sums(
    logits[:, :1], labels[:, :1], mask[:, :1], tasks=TASKS
  )
  np.testing.assert_allclose(sums, 2 * np.asarray(one), rtol=1e-6)
  np.testing.assert_array_equal(counts, [2.0, 2.0])
