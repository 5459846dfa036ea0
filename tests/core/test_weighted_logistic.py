"""YouTube's weighted logistic regression (Covington et
al., RecSys 2016, Sec. 4.2): mtl/core/losses.py `weighted_logistic`.

Oracle: synthetic impressions whose expected watch time is known by
construction (click rate P_j, mean watch time mu_j of a click per group j,
so E[T_j] = P_j mu_j), and the closed-form optimum of the loss, odds
sum(T) / #negatives.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core import losses
from mtl.core.tasks import Task
from mtl.errors import ConfigError

P = np.array([0.02, 0.05, 0.1])  # click rate per group
MU = np.array([30.0, 120.0, 400.0])  # mean watch time of a click
N = 200_000  # impressions per group


def impressions(seed=0):
  rng = np.random.default_rng(seed)
  group = np.repeat(np.arange(len(P)), N)
  click = rng.random(group.size) < P[group]
  watch = np.where(click, rng.exponential(MU[group]), 0.0)
  return group, watch.astype(np.float32)


def fit_group_logits(group, watch):
  """Per-group logits minimising the mean weighted logistic loss (Newton's
  method on a convex function of one logit per group)."""
  labels = jnp.asarray(watch)[None]
  mask = jnp.ones_like(labels)
  tasks = (Task('watch', 'weighted_logistic'),)
  onehot = jax.nn.one_hot(group, len(P))

  def loss(b):
    logits = (onehot @ b)[None]
    sums, counts = losses.masked_loss_sums(logits, labels, mask, tasks=tasks)
    return sums[0] / counts[0]

  grad, hess = jax.jit(jax.grad(loss)), jax.jit(jax.hessian(loss))
  b = jnp.zeros(len(P))
  for _ in range(40):
    b = b - jnp.linalg.solve(hess(b), grad(b))
  return np.asarray(b, np.float64)


def test_exp_logit_estimates_the_expected_watch_time():
  group, watch = impressions()
  b = fit_group_logits(group, watch)
  for j in range(len(P)):
    w = watch[group == j].astype(np.float64)
    negatives = np.sum(w == 0)
    # The exact optimum: odds = sum(T) / #negatives = mean(T) / (1 - P).
    np.testing.assert_allclose(np.exp(b[j]), w.sum() / negatives, rtol=1e-4)
    np.testing.assert_allclose(
      np.exp(b[j]) * negatives / w.size, w.mean(), rtol=1e-4
    )
    # Against the truth E[T] = P mu: e^b (1 - P) within 4 standard errors
    # of a mean of N watch times (Var T = P 2 mu^2 - (P mu)^2); e^b itself
    # is E[T] / (1 - P), Covington's E[T] (1 + P) to first order.
    truth = P[j] * MU[j]
    se = np.sqrt(2 / P[j] - 1) / np.sqrt(N)
    assert abs(np.exp(b[j]) * (1 - P[j]) / truth - 1) < 4 * se, j


def test_per_example_loss_against_numpy():
  z = np.array([-2.0, 0.0, 1.5, 3.0], np.float32)
  t = np.array([0.0, 2.0, 0.0, 10.0], np.float32)
  got = np.asarray(losses.weighted_logistic(jnp.asarray(z), jnp.asarray(t)))
  log_sig = lambda x: -np.log1p(np.exp(-x))
  want = np.where(t > 0, -t * log_sig(z), -log_sig(-z))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_task_kind():
  assert Task('watch', 'weighted_logistic').kind == 'weighted_logistic'
  with pytest.raises(ConfigError, match='weighted_logistc'):
    Task('watch', 'weighted_logistc')
