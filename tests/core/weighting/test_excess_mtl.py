"""ExcessMTL (He et al. 2024) against a float64 reference, step by step.

The reference is the paper's Algorithm 1 on explicit gradients g [T, P] in
float64 numpy: accumulated squared gradients G_t, the excess risk estimates
e_t = sum_p g_tp^2 / sqrt(G_tp + eps), normalised by the first step's, and
the exponentiated gradient step of alpha on the simplex (multiplied and
renormalised as written, where mtl shifts the exponent). A second oracle is
the authors' code's loop (weights summing to T, no update at the first
step, a loop over tasks). mtl's weights T alpha, its alpha and its G must be
within 1e-5 relative at each of 20 steps, with new gradients every step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from mtl.core.weighting import WEIGHTINGS
from mtl.core.weighting.excess_mtl import alphas, excess_mtl
from mtl.errors import ConfigError
from mtl.shell import validate
from tests.core.weighting import hard_cases

RTOL = 1e-5
STEPS = 20
P = 16

SETS = hard_cases.vector_sets(P)


class Reference:
  """Algorithm 1 in float64."""

  def __init__(self, t, step_size, eps):
    self.step_size, self.eps = step_size, eps
    self.squares = np.zeros((t, P))
    self.alphas = np.ones(t) / t
    self.first = None

  def step(self, g, weights):
    """The loss weights T alpha w."""
    self.squares = self.squares + g * g
    h = np.sqrt(self.squares + self.eps)
    e = np.array(
      [
        sum(g[t, p] ** 2 / h[t, p] for p in range(P) if h[t, p] > 0)
        for t in range(len(g))
      ]
    )
    if self.first is None:
      self.first = e
    r = np.array([e[t] / f if f > 0 else 0.0 for t, f in enumerate(self.first)])
    self.alphas = self.alphas * np.exp(self.step_size * r)
    self.alphas = self.alphas / self.alphas.sum()
    return len(g) * self.alphas * weights


class AuthorsCode:
  """The authors' code's loop (also LibMTL's), in float64."""

  def __init__(self, t, step_size):
    self.step_size = step_size
    self.loss_weight = np.ones(t)
    self.grad_sum = np.zeros((t, P))
    self.initial_w = None

  def step(self, grads):
    w = np.zeros(len(grads))
    for i in range(len(grads)):
      self.grad_sum[i] += grads[i] ** 2
      h_i = np.sqrt(self.grad_sum[i] + 1e-7)
      w[i] = grads[i] * (1 / h_i) @ grads[i]
    if self.initial_w is None:
      self.initial_w = w
    else:
      w = w / self.initial_w
      self.loss_weight = self.loss_weight * np.exp(w * self.step_size)
      self.loss_weight = self.loss_weight / self.loss_weight.sum() * len(w)
    return self.loss_weight


_UPDATES = {}


def _update(step_size, eps):
  if (step_size, eps) not in _UPDATES:
    method = excess_mtl(step_size=step_size, eps=eps)
    _UPDATES[step_size, eps] = (method, jax.jit(method.update))
  return _UPDATES[step_size, eps]


def run_steps(name, step_size=1e-2, eps=1e-7, weights=None, seed=0):
  rng = np.random.default_rng(seed)
  method, update = _update(step_size, eps)
  first = SETS[name](rng)
  t = len(first)
  w = np.ones(t) if weights is None else np.asarray(weights)
  state, ref = method.init(t, P), Reference(t, step_size, eps)
  code = AuthorsCode(t, step_size)
  for step in range(STEPS):
    g = first if step == 0 else SETS[name](rng)
    if name == 'zero_task':  # the same task's gradient is zero every step
      g[1] = 0.0
    # Gradients that shrink or grow over the steps move the estimates.
    g = g * rng.uniform(0.2, 2.0, size=(t, 1))
    want = ref.step(g, w)
    out, state = update(
      jnp.asarray(w, jnp.float32),
      state,
      task_grads=jnp.asarray(g, jnp.float32),
      losses=jnp.ones(t, jnp.float32),
      step=step,
    )
    # Weights below float32's range (~1e-38) are 0.
    np.testing.assert_allclose(
      out, want, rtol=RTOL, atol=1e-37, err_msg=str(step)
    )
    np.testing.assert_allclose(alphas(state), ref.alphas, rtol=RTOL, atol=1e-37)
    np.testing.assert_allclose(state.squares, ref.squares, rtol=RTOL)
    if eps == 1e-7 and name != 'zero_task':  # the code divides 0 by 0
      np.testing.assert_allclose(out / w, code.step(g), rtol=RTOL, atol=1e-37)
  assert int(state.count) == STEPS
  return ref


@pytest.mark.parametrize('name', sorted(SETS))
def test_matches_the_reference_over_twenty_steps(name):
  run_steps(name)


@pytest.mark.parametrize('name', ['opposed_scaled6', 'random10', 'zero_task'])
@pytest.mark.parametrize('step_size, eps', [(1.0, 1e-7), (0.3, 0.0)])
def test_larger_steps_match_the_reference(name, step_size, eps):
  run_steps(name, step_size=step_size, eps=eps)


def test_incoming_weights_multiply():
  run_steps('scaled3', weights=[2.0, 0.5, 1.0], step_size=1.0)


def test_a_task_far_from_its_optimum_gains_weight():
  # Task 0's gradient stays as large as at the start while task 1's decays
  # (it converges): e_0 / e_0(1) falls only as 1/sqrt(k) (G grows), e_1's
  # much faster, so alpha_0 grows. Scale-free: task 0's gradient is 100x
  # smaller, which the normalisation by e(1) removes.
  method, update = _update(1.0, 0.0)
  state = method.init(2, 4)
  rng = np.random.default_rng(1)
  for k in range(STEPS):
    g = rng.normal(size=(2, 4)) * np.array([[0.01], [0.5**k]])
    out, state = update(
      jnp.ones(2), state, task_grads=jnp.asarray(g, jnp.float32), step=k
    )
  assert out[0] > 1.2 > 0.8 > out[1]
  np.testing.assert_allclose(np.sum(out), 2.0, rtol=1e-6)


def test_by_hand_two_steps():
  # eps = 0, step 1: g = ((3, 0), (0, 2)): G = g^2, e = |g|_1 = (3, 2) = e(1),
  # r = (1, 1): alpha stays (1/2, 1/2), weights (1, 1). Step 2: g = ((3, 0),
  # (0, 0)): G = ((18, 0), (0, 4)), e = (9 / sqrt(18), 0) = (2.1213, 0),
  # r = (0.70711, 0); eta = 1: alpha ~ (e^0.70711, 1) = (2.0281, 1) / 3.0281.
  method, update = _update(1.0, 0.0)
  out, state = update(
    jnp.ones(2),
    method.init(2, 2),
    task_grads=jnp.array([[3.0, 0.0], [0.0, 2.0]]),
    step=0,
  )
  np.testing.assert_allclose(out, [1.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(state.first, [3.0, 2.0], rtol=1e-6)
  out, state = update(
    jnp.ones(2), state, task_grads=jnp.array([[3.0, 0.0], [0.0, 0.0]]), step=1
  )
  a = np.exp(np.sqrt(0.5))
  np.testing.assert_allclose(alphas(state), [a / (a + 1), 1 / (a + 1)], 1e-6)
  np.testing.assert_allclose(out, 2 * alphas(state), rtol=1e-6)


def test_init_without_a_size_checks_only():
  method = WEIGHTINGS['excess_mtl']()
  state = method.init(4)
  assert state.squares.shape == (4, 0)
  np.testing.assert_allclose(alphas(state), 0.25)
  assert method.needs == {'task_grads'} and not method.combines_gradients


@pytest.mark.parametrize(
  'kwargs, message',
  [
    ({'step_size': 0.0}, 'excess_mtl: step_size is 0.0, expected > 0'),
    ({'step_size': -1.0}, 'excess_mtl: step_size is -1.0, expected > 0'),
    ({'eps': -1e-7}, 'excess_mtl: eps is -1e-07, expected >= 0'),
  ],
)
def test_out_of_range_is_one_line_error(kwargs, message):
  with pytest.raises(ConfigError, match=message) as err:
    excess_mtl(**kwargs)
  assert '\n' not in str(err.value)


def test_config_key_is_named():
  config = common.base_config('mmoe', 'entire_space')
  config.weighting_name = 'excess_mtl'
  validate.check_config(config)  # The defaults pass.
  config.weighting.excess_mtl.step_size = -1.0
  with pytest.raises(
    ConfigError, match=r'^weighting.excess_mtl.step_size is -1.0, exp'
  ):
    validate.check_config(config)
