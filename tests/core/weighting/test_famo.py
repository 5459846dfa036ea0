"""FAMO (Liu et al. 2023) against a float64 reference, step by step.

The reference is Algorithm 1 of the paper with the authors' Adam on the
logits (PyTorch Adam with L2 weight decay, written out in float64 numpy),
fed with mtl's timing: at step k the decrease delta = log L(k - 1) - log L(k)
updates the logits, then step k is weighed. Each step's loss weights are the
derivatives of the paper's model objective sum_t c z_t log L_t (c held
fixed), taken by complex steps, times T (mtl's scale). mtl's weights must be
within 1e-5 relative at each of 20 steps.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from mtl.core.weighting.famo import famo
from mtl.errors import ConfigError
from mtl.shell import validate

RTOL = 1e-5
STEPS = 20


class Reference:
  """FAMO, float64: logits xi, Adam (beta1 0.9, beta2 0.999, eps 1e-8)."""

  def __init__(self, t, lr, gamma):
    self.lr, self.gamma = lr, gamma
    self.xi = np.zeros(t)
    self.m, self.v, self.count = np.zeros(t), np.zeros(t), 0
    self.previous = None

  def adam(self, grad):
    grad = grad + self.gamma * self.xi  # PyTorch Adam's weight_decay
    self.count += 1
    self.m = 0.9 * self.m + 0.1 * grad
    self.v = 0.999 * self.v + 0.001 * grad**2
    m_hat = self.m / (1 - 0.9**self.count)
    v_hat = self.v / (1 - 0.999**self.count)
    self.xi = self.xi - self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)

  def step(self, losses):
    losses = np.asarray(losses, np.float64) + 1e-8
    if self.previous is not None:
      delta = np.log(self.previous) - np.log(losses)
      z = np.exp(self.xi) / np.sum(np.exp(self.xi))
      jacobian = np.diag(z) - np.outer(z, z)  # d softmax / d xi
      self.adam(jacobian.T @ delta)
    self.previous = losses
    z = np.exp(self.xi) / np.sum(np.exp(self.xi))
    c = 1.0 / np.sum(z / losses)

    def objective(x):
      return np.sum(c * z * np.log(x))

    weights = []
    for k in range(len(losses)):
      x = losses.astype(np.complex128)
      x[k] += 1e-30j
      weights.append(objective(x).imag / 1e-30)
    return len(losses) * np.array(weights)


def trajectory(kind, rng):
  """[STEPS, T] positive losses."""
  k = np.arange(STEPS)[:, None]
  if kind == 'opposed':  # one task falls while the other rises
    base = np.concatenate([0.9 * 0.93**k, 0.2 * 1.05**k], axis=1)
  elif kind == 'scaled_100x':
    base = np.concatenate([0.01 * 0.97**k, 1.0 * 0.9**k], axis=1)
  elif kind == 'near_equal':
    base = 0.5 * np.array([[0.95, 0.96, 0.97]]) ** k
  elif kind == 'plateau':  # one task stuck, the others learn
    base = np.concatenate([0.7 + 0 * k, 0.7 * 0.9**k, 0.3 * 0.95**k], axis=1)
  elif kind == 'five':
    base = np.array([[0.3, 0.05, 2.4, 0.9, 0.66]]) * 0.97**k
  else:  # eight tasks, logspace scales and rates
    base = np.logspace(-2, 1, 8)[None, :] * np.linspace(0.9, 1.0, 8) ** k
  return base * np.exp(0.05 * rng.normal(size=base.shape))


CASES = [
  ('opposed', 0.025, 0.01),
  ('opposed', 0.1, 0.0),
  ('scaled_100x', 0.025, 0.01),
  ('scaled_100x', 0.025, 1e-3),
  ('near_equal', 0.025, 0.01),
  ('plateau', 0.025, 0.01),
  ('plateau', 0.5, 0.1),
  ('five', 0.025, 0.01),
  ('five', 0.1, 1e-3),
  ('eight', 0.025, 0.01),
]


@functools.cache
def _compiled(lr, gamma):
  method = famo(learning_rate=lr, weight_decay=gamma)
  return method, jax.jit(method.update)


def run_both(losses, lr, gamma, weights=None):
  method, update = _compiled(lr, gamma)
  t = losses.shape[1]
  ref = Reference(t, lr, gamma)
  base = np.ones(t) if weights is None else np.asarray(weights)
  state = method.init(t)
  for step, row in enumerate(np.float32(losses)):
    w, state = update(
      jnp.asarray(base, jnp.float32),
      state,
      losses=jnp.asarray(row),
      step=step,
      epoch=0,
    )
    yield np.asarray(w, np.float64), base * ref.step(row), state, ref


@pytest.mark.parametrize('kind, lr, gamma', CASES)
def test_matches_the_reference_over_twenty_steps(kind, lr, gamma):
  losses = trajectory(kind, np.random.default_rng(len(kind)))
  for got, want, state, ref in run_both(losses, lr, gamma):
    np.testing.assert_allclose(got, want, rtol=RTOL)
    np.testing.assert_allclose(state.logits, ref.xi, rtol=1e-4, atol=1e-5)
  assert np.ptp(ref.xi) > 1e-2  # the logits did move


def test_incoming_weights_multiply():
  losses = trajectory('five', np.random.default_rng(0))
  weights = [2.0, 0.5, 1.0, 1.0, 3.0]
  for got, want, _, _ in run_both(losses, 0.025, 0.01, weights):
    np.testing.assert_allclose(got, want, rtol=RTOL)


def test_first_two_steps_by_hand():
  method, update = _compiled(0.025, 0.01)
  state = method.init(2)
  # Step 0: no previous loss, xi = 0: w = T (1/L) / sum(1/L) = (1, 1).
  w, state = update(jnp.ones(2), state, losses=jnp.array([1.0, 1.0]), step=0)
  np.testing.assert_allclose(w, [1.0, 1.0], rtol=1e-6)
  # Step 1: L = (0.5, 1): delta = (log 2, 0), z = (1/2, 1/2), J^T delta =
  # z (delta - z.delta) = (log 2 / 4, -log 2 / 4); Adam's first step moves
  # xi by -lr sign: xi = (-0.025, 0.025). Then z = softmax(xi) and
  # w = 2 (z / L) / sum(z / L).
  w, state = update(jnp.ones(2), state, losses=jnp.array([0.5, 1.0]), step=1)
  np.testing.assert_allclose(state.logits, [-0.025, 0.025], rtol=1e-5)
  z = np.exp([-0.025, 0.025]) / np.exp([-0.025, 0.025]).sum()
  q = z / np.array([0.5, 1.0])
  np.testing.assert_allclose(w, 2 * q / q.sum(), rtol=1e-6)
  # The task whose loss fell (task 0) lost logit weight.
  assert z[0] < 0.5


@pytest.mark.parametrize(
  'kwargs, message',
  [
    ({'learning_rate': 0.0}, 'famo: learning_rate is 0.0, expected > 0'),
    ({'weight_decay': -0.1}, 'famo: weight_decay is -0.1, expected >= 0'),
  ],
)
def test_out_of_range_is_one_line_error(kwargs, message):
  with pytest.raises(ConfigError, match=message) as err:
    famo(**kwargs)
  assert '\n' not in str(err.value)


def test_config_key_is_named():
  config = common.base_config('mmoe', 'entire_space')
  config.weighting_name = 'famo'
  validate.check_config(config)  # The defaults pass.
  config.weighting.famo.weight_decay = -1.0
  with pytest.raises(
    ConfigError, match=r'^weighting.famo.weight_decay is -1.0, expected'
  ):
    validate.check_config(config)
