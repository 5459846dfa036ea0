"""Masked losses against numpy."""

import numpy as np
import pytest

from mtl.core import losses
from mtl.core.tasks import Task

TASKS = (Task('click', 'binary'), Task('rating', 'regression'))


def _numpy_losses(logits, labels, mask):
  p = 1 / (1 + np.exp(-logits[0]))
  bce = -(labels[0] * np.log(p) + (1 - labels[0]) * np.log(1 - p))
  se = (logits[1] - labels[1]) ** 2
  out = []
  for row, m in ((bce, mask[0]), (se, mask[1])):
    out.append((row * m).sum() / m.sum())
  return np.array(out)


def test_masked_mean_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 16)).astype(np.float32)
  labels = np.stack([rng.integers(0, 2, 16), rng.normal(size=16)])
  labels = labels.astype(np.float32)
  mask = (rng.random((2, 16)) > 0.3).astype(np.float32)
  got = losses.masked_mean_losses(logits, labels, mask, tasks=TASKS)
  np.testing.assert_allclose(got, _numpy_losses(logits, labels, mask), 1e-5)


def test_masked_rows_are_ignored_even_when_nan():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 8)).astype(np.float32)
  labels = np.abs(rng.normal(size=(2, 8))).round().clip(0, 1)
  labels = labels.astype(np.float32)
  mask = np.ones((2, 8), np.float32)
  mask[:, 5:] = 0
  base = losses.masked_mean_losses(logits, labels, mask, tasks=TASKS)
  poisoned_logits = logits.copy()
  poisoned_logits[:, 5:] = np.nan
  poisoned_labels = labels.copy()
  poisoned_labels[:, 5:] = 1e6
  got = losses.masked_mean_losses(
    poisoned_logits, poisoned_labels, mask, tasks=TASKS
  )
  np.testing.assert_array_equal(np.asarray(got), np.asarray(base))
  trimmed = losses.masked_mean_losses(
    logits[:, :5], labels[:, :5], mask[:, :5], tasks=TASKS
  )
  np.testing.assert_allclose(got, trimmed, 1e-6)


def test_sums_and_counts_combine_across_shards():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(2, 12)).astype(np.float32)
  labels = rng.integers(0, 2, (2, 12)).astype(np.float32)
  mask = (rng.random((2, 12)) > 0.5).astype(np.float32)
  full = losses.masked_mean_losses(logits, labels, mask, tasks=TASKS)
  s1, c1 = losses.masked_loss_sums(
    logits[:, :4], labels[:, :4], mask[:, :4], tasks=TASKS
  )
  s2, c2 = losses.masked_loss_sums(
    logits[:, 4:], labels[:, 4:], mask[:, 4:], tasks=TASKS
  )
  np.testing.assert_allclose((s1 + s2) / (c1 + c2), full, 1e-6)


def test_unknown_task_kind_is_rejected():
  with pytest.raises(ValueError, match="kind 'ranking' is not one of"):
    Task('x', 'ranking')
