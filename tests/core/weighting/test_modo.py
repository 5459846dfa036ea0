"""MoDo (Chen et al. 2023) against a float64 reference, step by step.

The reference is the paper's Algorithm 1 on explicit gradients of three
independent samples G_1, G_2, G_3 [T, P] in float64 numpy: lambda <-
Pi_simplex(lambda - gamma (G_1 G_2^T + rho I) lambda), the projection by
bisection on the threshold (not mtl's sort), and d = G_3^T lambda. mtl's d
and lambda must be within 1e-5 relative at each of 20 steps, with new
samples at every step. tests/core/test_batch_parts.py checks the samples
the train step gives (the parts of the global batch); test_parallel that 8
devices equal one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from mtl.core.weighting import WEIGHTINGS
from mtl.core.weighting.modo import modo
from mtl.errors import ConfigError
from mtl.shell import validate
from tests.core.weighting import hard_cases

RTOL = 1e-5
STEPS = 20
P = 16

SETS = hard_cases.vector_sets(P)


class Reference:
  """Algorithm 1 in float64."""

  def __init__(self, t, gamma, rho):
    self.gamma, self.rho = gamma, rho
    self.lambdas = np.ones(t) / t

  def step(self, g1, g2, g3):
    a = g1 @ g2.T + self.rho * np.eye(len(g1))
    self.lambdas = hard_cases.project_simplex(
      self.lambdas - self.gamma * a @ self.lambdas
    )
    return g3.T @ self.lambdas


_UPDATES = {}


def _update(gamma, rho):
  if (gamma, rho) not in _UPDATES:
    method = modo(gamma=gamma, rho=rho)
    _UPDATES[gamma, rho] = (method, jax.jit(method.update))
  return _UPDATES[gamma, rho]


def samples(name, rng, t):
  """Three independent draws around one set: the step's three parts."""
  base = SETS[name](rng)
  parts = base + 0.3 * rng.normal(size=(3, t, P)) * np.linalg.norm(
    base, axis=1, keepdims=True
  ) / np.sqrt(P)
  if name == 'zero_task':  # the same task's gradient is zero every step
    parts[:, 1] = 0.0
  return parts


def run_steps(name, gamma=1e-3, rho=0.1, weights=None, seed=0, rtol=RTOL):
  rng = np.random.default_rng(seed)
  method, update = _update(gamma, rho)
  t = len(SETS[name](np.random.default_rng(seed)))
  w = np.ones(t) if weights is None else np.asarray(weights)
  state, ref = method.init(t), Reference(t, gamma, rho)
  for step in range(STEPS):
    g = samples(name, rng, t)
    gw = w[None, :, None] * g
    want = ref.step(*gw)
    out, state = update(
      jnp.asarray(w, jnp.float32),
      state,
      task_grads_parts=jnp.asarray(g, jnp.float32),
      losses=jnp.ones(t, jnp.float32),
      step=step,
    )
    got = np.asarray(out.gradient, np.float64)
    assert np.linalg.norm(got - want) <= rtol * np.linalg.norm(want), step
    np.testing.assert_allclose(out.weights, w)
    np.testing.assert_allclose(
      state.lambdas, ref.lambdas, rtol=rtol, atol=rtol, err_msg=str(step)
    )
  return ref


@pytest.mark.parametrize('name', sorted(SETS))
def test_matches_the_reference_over_twenty_steps(name):
  # gamma 0.01 on gradients of norm ~1-3 keeps lambda moving inside the
  # simplex (the default 1e-3 barely moves it; see the next test).
  run_steps(name, gamma=0.01)


@pytest.mark.parametrize('name', ['opposed2', 'scaled5', 'random6'])
@pytest.mark.parametrize('gamma, rho', [(1e-3, 0.1), (0.1, 1.0)])
def test_other_step_sizes_match_the_reference(name, gamma, rho):
  run_steps(name, gamma=gamma, rho=rho)


@pytest.mark.parametrize('name', ['opposed2', 'scaled5', 'random6'])
def test_float32_limit_of_the_lambda_step(name):
  # The case modo's docstring states: gamma = 1 and gradients of norm ~4,
  # gamma G_1 G_2^T lambda ~16 against lambda <= 1 (random6: 2.4e-5).
  run_steps(name, gamma=1.0, rho=0.0, rtol=1e-4)


def test_incoming_weights_act_on_the_gradients():
  run_steps('scaled3', weights=[2.0, 0.5, 1.0], gamma=0.01)


def test_lambda_moves_to_the_vertex_of_the_shorter_gradient():
  # lambda descends lambda^T G G^T lambda / 2: the 100-fold scaled set
  # ends with its weight on the shortest task's gradient.
  # (gamma 1e-4 against squared norms up to ~1e5; a larger gamma overshoots:
  # G_1 G_2^T of independent samples is no PSD matrix.)
  ref = run_steps('scaled3', gamma=1e-4)
  assert ref.lambdas[0] > 0.8 and ref.lambdas[2] == 0


def test_by_hand_first_step():
  # G_1 = G_2 = ((1, 0), (0, 2)), rho = 0, gamma = 0.1: G_1 G_2^T lambda =
  # (0.5, 2); lambda = (0.45, 0.3), projected: + 0.125 = (0.575, 0.425);
  # G_3 = ((2, 0), (0, 1)): d = (1.15, 0.425).
  method, update = _update(0.1, 0.0)
  g12 = [[1.0, 0.0], [0.0, 2.0]]
  out, state = update(
    jnp.ones(2),
    method.init(2),
    task_grads_parts=jnp.array([g12, g12, [[2.0, 0.0], [0.0, 1.0]]]),
    step=0,
  )
  np.testing.assert_allclose(state.lambdas, [0.575, 0.425], rtol=1e-6)
  np.testing.assert_allclose(out.gradient, [1.15, 0.425], rtol=1e-6)


def test_needs_the_parts_and_returns_the_vector():
  method = WEIGHTINGS['modo']()
  assert method.needs == {'task_grads_parts'}
  assert method.combines_gradients == 'vector'
  np.testing.assert_allclose(method.init(4).lambdas, 0.25)


@pytest.mark.parametrize(
  'kwargs, message',
  [
    ({'gamma': 0.0}, 'modo: gamma is 0.0, expected > 0'),
    ({'rho': -0.1}, 'modo: rho is -0.1, expected >= 0'),
  ],
)
def test_out_of_range_is_one_line_error(kwargs, message):
  with pytest.raises(ConfigError, match=message) as err:
    modo(**kwargs)
  assert '\n' not in str(err.value)


def test_config_key_is_named():
  config = common.base_config('mmoe', 'entire_space')
  config.weighting_name = 'modo'
  validate.check_config(config)  # The defaults pass.
  config.weighting.modo.gamma = -1.0
  with pytest.raises(ConfigError, match=r'^weighting.modo.gamma is -1.0, exp'):
    validate.check_config(config)
