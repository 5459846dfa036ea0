"""MoCo (Fernando et al. 2023) against a float64 reference, step by step.

The reference is the paper's Algorithm 1 on explicit gradients g [T, P] in
float64 numpy: the tracked gradients y_t, lambda stepped on the Gram matrix
of Y and projected onto the simplex (here by bisection on the threshold, not
mtl's sort), and d = sum_t lambda_t y_t; and the authors' code (variant
'code': loss-scaled unit gradients, a softmax for the projection). mtl's d,
y and lambda must be within 1e-5 relative at each of 20 steps, with new
gradients and losses at every step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from mtl.core.weighting import WEIGHTINGS
from mtl.core.weighting.moco import moco
from mtl.errors import ConfigError
from mtl.shell import validate
from tests.core.weighting import hard_cases

RTOL = 1e-5
STEPS = 20
P = 16

SETS = hard_cases.vector_sets(P)


class Reference:
  """Algorithm 1 (or the authors' code) in float64."""

  def __init__(self, t, beta, beta_sigma, gamma, gamma_sigma, rho, variant):
    self.rates = beta, beta_sigma, gamma, gamma_sigma
    self.rho, self.variant = rho, variant
    self.y, self.lambdas, self.k = np.zeros((t, P)), np.ones(t) / t, 0

  def step(self, g, losses, weights):
    beta, beta_sigma, gamma, gamma_sigma = self.rates
    self.k += 1
    h = weights[:, None] * g
    if self.variant == 'code':
      h = h / (np.linalg.norm(h, axis=1) + 1e-8)[:, None] * losses[:, None]
    self.y = self.y - beta / self.k**beta_sigma * (self.y - h)
    a = self.y @ self.y.T + self.rho * np.eye(len(g))
    v = self.lambdas - gamma / self.k**gamma_sigma * a @ self.lambdas
    if self.variant == 'code':
      e = np.exp(v - v.max())
      self.lambdas = e / e.sum()
    else:
      self.lambdas = hard_cases.project_simplex(v)
    return self.lambdas @ self.y


_UPDATES = {}


def _update(**kwargs):
  key = tuple(sorted(kwargs.items()))
  if key not in _UPDATES:
    method = moco(**kwargs)
    _UPDATES[key] = (method, jax.jit(method.update))
  return _UPDATES[key]


DEFAULTS = dict(beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0)


def run_steps(name, weights=None, seed=0, scale=1.0, rtol=RTOL, **kwargs):
  kwargs = {**DEFAULTS, 'variant': 'paper', **kwargs}
  rng = np.random.default_rng(seed)
  method, update = _update(**kwargs)
  first = SETS[name](rng) * scale
  t = len(first)
  w = np.ones(t) if weights is None else np.asarray(weights)
  state, ref = method.init(t, P), Reference(t, **kwargs)
  for step in range(STEPS):
    g = first if step == 0 else SETS[name](rng) * scale
    if name == 'zero_task':  # the same task's gradient is zero every step
      g[1] = 0.0
    losses = rng.uniform(0.05, 3.0, size=t)
    want = ref.step(g, losses, w)
    out, state = update(
      jnp.asarray(w, jnp.float32),
      state,
      task_grads=jnp.asarray(g, jnp.float32),
      losses=jnp.asarray(losses, jnp.float32),
      step=step,
    )
    got = np.asarray(out.gradient, np.float64)
    assert np.linalg.norm(got - want) <= rtol * np.linalg.norm(want), step
    np.testing.assert_allclose(out.weights, w)
    np.testing.assert_allclose(
      state.lambdas, ref.lambdas, rtol=rtol, atol=rtol, err_msg=str(step)
    )
    np.testing.assert_allclose(
      state.estimates,
      ref.y,
      rtol=rtol,
      atol=rtol * np.abs(ref.y).max(),
    )
  assert int(state.count) == STEPS
  return ref


@pytest.mark.parametrize('name', sorted(SETS))
@pytest.mark.parametrize('variant', ['paper', 'code'])
def test_matches_the_reference_over_twenty_steps(name, variant):
  # The paper's lambda step is gamma (Y Y^T) lambda: gradients of norm ~0.1
  # keep lambda inside the simplex for a while (at norm ~10 it jumps to a
  # vertex at once).
  run_steps(name, variant=variant, scale=0.1)


@pytest.mark.parametrize('name', ['opposed2', 'scaled5', 'random6'])
def test_large_gradients_match_the_reference(name):
  run_steps(name)


@pytest.mark.parametrize(
  'kwargs',
  [
    dict(beta=1.0, beta_sigma=0.0),  # y_t = h_t: no tracking
    dict(gamma=0.01, gamma_sigma=0.0, rho=0.5),
    dict(beta=0.1, beta_sigma=1.0, gamma=1.0, gamma_sigma=1.0),
    dict(gamma=1.0, gamma_sigma=0.0),
  ],
)
def test_other_rates_match_the_reference(kwargs):
  run_steps('opposed5', scale=0.1, **kwargs)


@pytest.mark.parametrize(
  'name, kwargs',
  [
    ('opposed_scaled4', dict(beta=1.0, beta_sigma=0.0)),  # 3.7e-5
    ('opposed_scaled6', dict(gamma=1.0, gamma_sigma=0.0)),  # 5.2e-5
  ],
)
def test_float32_limit_of_the_lambda_step(name, kwargs):
  # The cases moco's docstring states: a large gamma_k Y Y^T lambda with
  # lambda inside the simplex, its float32 rounding moving lambda.
  run_steps(name, scale=0.1, rtol=1e-4, **kwargs)


def test_incoming_weights_act_on_the_gradients():
  run_steps('scaled3', weights=[2.0, 0.5, 1.0], scale=0.1)


def test_lambda_moves_towards_the_smaller_gradient():
  # lambda descends lambda^T Y Y^T lambda / 2: from 1/T it moves weight to
  # the task whose estimate is shorter (here the first, norm 1 against 10).
  ref = run_steps('scaled3', scale=0.1)
  assert ref.lambdas[0] > 1 / 3 > ref.lambdas[2]


def test_by_hand_first_step():
  # beta = 1, k = 1: y = g = ((1, 0), (0, 2)); Y Y^T = diag(1, 4); lambda =
  # (1/2, 1/2) - 0.1 (1/2, 2) = (0.45, 0.3), projected: + 0.125 each =
  # (0.575, 0.425); d = (0.575, 0.85).
  method, update = _update(**{**DEFAULTS, 'beta': 1.0})
  out, state = update(
    jnp.ones(2),
    method.init(2, 2),
    task_grads=jnp.array([[1.0, 0.0], [0.0, 2.0]]),
    losses=jnp.ones(2),
    step=0,
  )
  np.testing.assert_allclose(state.lambdas, [0.575, 0.425], rtol=1e-6)
  np.testing.assert_allclose(out.gradient, [0.575, 0.85], rtol=1e-6)


def test_init_without_a_size_checks_only():
  state = WEIGHTINGS['moco']().init(4)
  assert state.estimates.shape == (4, 0)
  np.testing.assert_allclose(state.lambdas, 0.25)


@pytest.mark.parametrize(
  'kwargs, message',
  [
    ({'beta': 0.0}, r'moco: beta is 0.0, expected in \(0, 1\]'),
    ({'beta': 1.5}, r'moco: beta is 1.5, expected in \(0, 1\]'),
    ({'gamma': 0.0}, 'moco: gamma is 0.0, expected > 0'),
    ({'beta_sigma': -1.0}, 'moco: beta_sigma is -1.0, expected >= 0'),
    ({'gamma_sigma': -1.0}, 'moco: gamma_sigma is -1.0, expected >= 0'),
    ({'rho': -0.1}, 'moco: rho is -0.1, expected >= 0'),
    ({'variant': 'libmtl'}, "moco: variant is 'libmtl', expected one of pa"),
  ],
)
def test_out_of_range_is_one_line_error(kwargs, message):
  with pytest.raises(ConfigError, match=message) as err:
    moco(**kwargs)
  assert '\n' not in str(err.value)


def test_config_key_is_named():
  config = common.base_config('mmoe', 'entire_space')
  config.weighting_name = 'moco'
  validate.check_config(config)  # The defaults pass.
  config.weighting.moco.gamma = -1.0
  with pytest.raises(ConfigError, match=r'^weighting.moco.gamma is -1.0, exp'):
    validate.check_config(config)
