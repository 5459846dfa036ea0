"""DB-MTL (Lin et al. 2023) against a float64 reference, step by step.

The reference is the paper's Algorithm 1 with the authors' code's rate
beta_k = beta / k^beta_sigma (constant at beta_sigma = 0, the default), on
explicit gradients g [T, P] and losses L [T] in float64 numpy: the
gradients of log(L_t + 1e-8), their moving averages g_hat_t, and
d = max_s ||g_hat_s|| sum_t g_hat_t / ||g_hat_t||. mtl's d, its
averages and its weights (w_t / (L_t + 1e-8)) must be within 1e-5 relative
at each of 20 steps, with new gradients and losses at every step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from mtl.core.weighting import WEIGHTINGS
from mtl.core.weighting.db_mtl import db_mtl
from mtl.errors import ConfigError
from mtl.shell import validate
from tests.core.weighting import hard_cases

RTOL = 1e-5
STEPS = 20
P = 16

SETS = hard_cases.vector_sets(P)


class Reference:
  """Algorithm 1 in float64."""

  def __init__(self, t, beta, beta_sigma):
    self.beta, self.beta_sigma = beta, beta_sigma
    self.averages = np.zeros((t, P))
    self.k = 0

  def step(self, g, losses, weights):
    """(d, the other groups' weights)."""
    self.k += 1
    rate = self.beta / self.k**self.beta_sigma
    log_grads = (weights / (losses + 1e-8))[:, None] * g
    self.averages = rate * self.averages + (1 - rate) * log_grads
    norms = np.linalg.norm(self.averages, axis=1)
    d = sum(self.averages[t] / norms[t] for t in range(len(g)) if norms[t] > 0)
    return norms.max() * d, weights / (losses + 1e-8)


_UPDATES = {}


def _update(beta, beta_sigma):
  if (beta, beta_sigma) not in _UPDATES:
    method = db_mtl(beta=beta, beta_sigma=beta_sigma)
    _UPDATES[beta, beta_sigma] = (method, jax.jit(method.update))
  return _UPDATES[beta, beta_sigma]


def run_steps(name, beta=0.9, beta_sigma=0.0, weights=None, seed=0):
  rng = np.random.default_rng(seed)
  method, update = _update(beta, beta_sigma)
  first = SETS[name](rng)
  t = len(first)
  w = np.ones(t) if weights is None else np.asarray(weights)
  state, ref = method.init(t, P), Reference(t, beta, beta_sigma)
  for step in range(STEPS):
    g = first if step == 0 else SETS[name](rng)
    if name == 'zero_task':  # the same task's gradient is zero every step
      g[1] = 0.0
    losses = rng.uniform(0.05, 3.0, size=t)
    want, want_w = ref.step(g, losses, w)
    out, state = update(
      jnp.asarray(w, jnp.float32),
      state,
      task_grads=jnp.asarray(g, jnp.float32),
      losses=jnp.asarray(losses, jnp.float32),
      step=step,
    )
    got = np.asarray(out.gradient, np.float64)
    assert np.linalg.norm(got - want) <= RTOL * np.linalg.norm(want), step
    np.testing.assert_allclose(out.weights, want_w, rtol=RTOL)
    np.testing.assert_allclose(
      state.averages,
      ref.averages,
      rtol=RTOL,
      atol=RTOL * np.abs(ref.averages).max(),
    )
  assert int(state.count) == STEPS
  return got, ref


@pytest.mark.parametrize('name', sorted(SETS))
def test_matches_the_reference_over_twenty_steps(name):
  run_steps(name)


@pytest.mark.parametrize(
  'beta, beta_sigma', [(0.9, 0.5), (0.5, 0.0), (0.0, 0.5), (0.99, 1.0)]
)
def test_other_rates_match_the_reference(beta, beta_sigma):
  run_steps('opposed_scaled4', beta=beta, beta_sigma=beta_sigma)


def test_incoming_weights_scale_the_log_losses():
  run_steps('scaled3', weights=[2.0, 0.5, 1.0])


def test_every_average_is_scaled_to_the_largest():
  # d's coefficients over the averages (5 independent vectors in R^16)
  # make every alpha_t g_hat_t as long as the longest average, though the
  # gradients' norms spread 100-fold.
  got, ref = run_steps('scaled5')
  c, *_ = np.linalg.lstsq(ref.averages.T, got, rcond=None)
  norms = np.linalg.norm(ref.averages, axis=1)
  assert norms.max() / norms.min() > 10
  np.testing.assert_allclose(c * norms, norms.max(), rtol=1e-4)


def test_by_hand_first_step():
  # beta = 0.5, k = 1: rate 0.5, g_hat = 0.5 g_t / L_t. g_1 = (3, 0), L_1 = 1;
  # g_2 = (0, 2), L_2 = 2: g_hat = (1.5, 0) and (0, 0.5), the largest norm
  # 1.5, so d = (1.5, 1.5); the towers' weights 1 / L = (1, 0.5).
  method, update = _update(0.5, 0.5)
  out, state = update(
    jnp.ones(2),
    method.init(2, 2),
    task_grads=jnp.array([[3.0, 0.0], [0.0, 2.0]]),
    losses=jnp.array([1.0, 2.0]),
    step=0,
  )
  np.testing.assert_allclose(out.gradient, [1.5, 1.5], rtol=1e-6)
  np.testing.assert_allclose(out.weights, [1.0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(state.averages, [[1.5, 0.0], [0.0, 0.5]])


def test_init_without_a_size_checks_only():
  state = WEIGHTINGS['db_mtl']().init(3)
  assert state.averages.shape == (3, 0)
  assert WEIGHTINGS['db_mtl']().combines_gradients == 'vector'


@pytest.mark.parametrize(
  'kwargs, message',
  [
    ({'beta': 1.0}, r'db_mtl: beta is 1.0, expected in \[0, 1\)'),
    ({'beta': -0.5}, r'db_mtl: beta is -0.5, expected in \[0, 1\)'),
    ({'beta_sigma': -1.0}, 'db_mtl: beta_sigma is -1.0, expected >= 0'),
  ],
)
def test_out_of_range_is_one_line_error(kwargs, message):
  with pytest.raises(ConfigError, match=message) as err:
    db_mtl(**kwargs)
  assert '\n' not in str(err.value)


def test_config_key_is_named():
  config = common.base_config('mmoe', 'entire_space')
  config.weighting_name = 'db_mtl'
  validate.check_config(config)  # The defaults pass.
  config.weighting.db_mtl.beta = 1.5
  with pytest.raises(ConfigError, match=r'^weighting.db_mtl.beta is 1.5, exp'):
    validate.check_config(config)
