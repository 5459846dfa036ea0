"""SDMGrad (Xiao et al. 2023) against a float64 reference, step by step.

The reference, in float64 numpy on explicit gradients of three independent
samples (zeta, xi, xi') [T, P]: A = G(xi) G(xi')^T (divided by the squared
mean gradient norm + 1e-8 when normalising), b = A 1 / T, `iterations`
heavy-ball steps w <- Pi_simplex(w - lr buf), buf <- momentum buf + A w +
lamda b (PyTorch SGD's order), the projection by bisection (not mtl's
sort), w warm-started across steps, and d = (G(zeta)^T w + lamda
g_0(zeta)) / (1 + lamda). mtl's d and w must be within 1e-5 relative at
each of 20 steps, with new samples at every step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from mtl.core.weighting import WEIGHTINGS
from mtl.core.weighting.sdmgrad import sdmgrad
from mtl.errors import ConfigError
from mtl.shell import validate
from tests.core.weighting import hard_cases

RTOL = 1e-5
STEPS = 20
P = 16

SETS = hard_cases.vector_sets(P)
DEFAULTS = dict(lamda=0.3, iterations=20, lr=5.0, momentum=0.5, normalise=True)


class Reference:
  """The stochastic algorithm, with the authors' code's inner loop."""

  def __init__(self, t, lamda, iterations, lr, momentum, normalise):
    self.lamda, self.iterations, self.lr = lamda, iterations, lr
    self.momentum, self.normalise = momentum, normalise
    self.w = np.ones(t) / t

  def step(self, zeta, xi, xi_prime):
    a = xi @ xi_prime.T
    if self.normalise:
      scale = np.mean(np.sqrt(np.maximum(np.diag(a), 0.0)))
      a = a / (scale**2 + 1e-8)
    b = a.mean(axis=1)
    buf = np.zeros_like(self.w)
    for _ in range(self.iterations):
      buf = self.momentum * buf + a @ self.w + self.lamda * b
      self.w = hard_cases.project_simplex(self.w - self.lr * buf)
    g0 = zeta.mean(axis=0)
    return (zeta.T @ self.w + self.lamda * g0) / (1 + self.lamda)


_UPDATES = {}


def _update(**kwargs):
  key = tuple(sorted(kwargs.items()))
  if key not in _UPDATES:
    method = sdmgrad(**kwargs)
    _UPDATES[key] = (method, jax.jit(method.update))
  return _UPDATES[key]


def samples(name, rng, t):
  """Three independent draws around one set: the step's three parts."""
  base = SETS[name](rng)
  noise = rng.normal(size=(3, t, P)) / np.sqrt(P)
  parts = base + 0.3 * noise * np.linalg.norm(base, axis=1, keepdims=True)
  if name == 'zero_task':  # the same task's gradient is zero every step
    parts[:, 1] = 0.0
  return parts


def run_steps(name, weights=None, seed=0, rtol=RTOL, **kwargs):
  kwargs = {**DEFAULTS, **kwargs}
  rng = np.random.default_rng(seed)
  method, update = _update(**kwargs)
  t = len(SETS[name](np.random.default_rng(seed)))
  w = np.ones(t) if weights is None else np.asarray(weights)
  state, ref = method.init(t), Reference(t, **kwargs)
  for step in range(STEPS):
    # The reference sees the float32 gradients mtl sees.
    g = samples(name, rng, t).astype(np.float32).astype(np.float64)
    want = ref.step(*(w[None, :, None] * g))
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
      state.w, ref.w, rtol=rtol, atol=rtol, err_msg=str(step)
    )
  return ref


def sensitivity(name, **kwargs):
  """The float64 reference's own largest relative change of d over the 20
  steps when every gradient entry moves by up to one float32 ulp."""
  kwargs = {**DEFAULTS, **kwargs}
  out = []
  for ulp in (0.0, 2.0**-23):
    rng, moves = np.random.default_rng(0), np.random.default_rng(1)
    t = len(SETS[name](np.random.default_rng(0)))
    ref, ds = Reference(t, **kwargs), []
    for _ in range(STEPS):
      g = samples(name, rng, t).astype(np.float32).astype(np.float64)
      ds.append(ref.step(*(g * (1 + ulp * moves.uniform(-1, 1, g.shape)))))
    out.append(ds)
  return max(
    np.linalg.norm(a - b) / np.linalg.norm(a) for a, b in zip(*out, strict=True)
  )


# At the defaults (lr 5 on the normalised A, momentum 0.5, 20 iterations)
# the inner iteration is expansive on some sets: the float64 reference
# itself moves by up to 2.3 (random6, random10) and 1.6e-3 (opposed5) when
# the gradients move by one float32 ulp, so no float32 (or float64) result
# can be compared there; sdmgrad's docstring states it. The other sets:
WELL_POSED = sorted(set(SETS) - {'random6', 'random10', 'opposed5'})


@pytest.mark.parametrize('name', WELL_POSED)
def test_matches_the_reference_over_twenty_steps(name):
  # scaled5 and opposed_scaled4 move by 7.5e-6 and 6.2e-6 under one ulp;
  # mtl is within 7.3e-5 and 1.5e-5 of them there.
  limit = sensitivity(name)
  run_steps(name, rtol=RTOL if limit < 1e-6 else 1e-4)


def test_the_defaults_are_ill_posed_on_six_random_tasks():
  # What the docstring states, measured on the reference itself.
  assert sensitivity('random6') > 0.1
  assert sensitivity('random6', lr=1.0) < 1e-6


@pytest.mark.parametrize(
  'kwargs',
  [
    dict(momentum=0.0, normalise=False, iterations=1, lr=0.01),  # the paper's
    dict(lr=1.0),
    dict(lamda=0.0, lr=1.0),  # lamda 0: MGDA's direction
    dict(lamda=3.0, iterations=5, momentum=0.9, lr=0.5),
  ],
)
@pytest.mark.parametrize('name', ['opposed5', 'random10', 'random6'])
def test_other_settings_match_the_reference(name, kwargs):
  run_steps(name, **kwargs)


def test_incoming_weights_act_on_the_gradients():
  run_steps('scaled3', weights=[2.0, 0.5, 1.0])


def test_by_hand_first_step():
  # One sample G = ((1, 0), (0, 3)) thrice, normalise off, momentum 0, one
  # step of lr 0.1, lamda 1: A = diag(1, 9), b = (0.5, 4.5); A w + b =
  # (1, 9), w = (0.5, 0.5) - (0.1, 0.9) = (0.4, -0.4), projected: + 0.5 =
  # (0.9, 0.1). d = (G^T w + g_0) / 2 with g_0 = (0.5, 1.5):
  # ((0.9, 0.3) + (0.5, 1.5)) / 2 = (0.7, 0.9).
  method, update = _update(
    lamda=1.0, iterations=1, lr=0.1, momentum=0.0, normalise=False
  )
  g = jnp.array([[1.0, 0.0], [0.0, 3.0]])
  out, state = update(
    jnp.ones(2), method.init(2), task_grads_parts=jnp.stack([g, g, g]), step=0
  )
  np.testing.assert_allclose(state.w, [0.9, 0.1], rtol=1e-6)
  np.testing.assert_allclose(out.gradient, [0.7, 0.9], rtol=1e-6)


def test_lamda_zero_reaches_the_min_norm_point():
  # lamda 0, one sample thrice: w solves MGDA's min-norm problem; for two
  # gradients w_1 = <g_2 - g_1, g_2> / ||g_1 - g_2||^2 (inside [0, 1]).
  g = np.array([[1.0, 0.0], [-0.5, 2.0]])
  method, update = _update(
    lamda=0.0, iterations=200, lr=0.1, momentum=0.5, normalise=True
  )
  out, state = update(
    jnp.ones(2),
    method.init(2),
    task_grads_parts=jnp.asarray(np.stack([g, g, g]), jnp.float32),
    step=0,
  )
  diff = g[1] - g[0]
  w1 = diff @ g[1] / (diff @ diff)
  np.testing.assert_allclose(state.w, [w1, 1 - w1], rtol=1e-5)
  np.testing.assert_allclose(out.gradient, w1 * g[0] + (1 - w1) * g[1], 1e-5)


def test_needs_the_parts_and_returns_the_vector():
  method = WEIGHTINGS['sdmgrad']()
  assert method.needs == {'task_grads_parts'}
  assert method.combines_gradients == 'vector'
  np.testing.assert_allclose(method.init(4).w, 0.25)


@pytest.mark.parametrize(
  'kwargs, message',
  [
    ({'lamda': -0.1}, 'sdmgrad: lamda is -0.1, expected >= 0'),
    ({'iterations': 0}, 'sdmgrad: iterations is 0, expected an int >= 1'),
    ({'lr': 0.0}, 'sdmgrad: lr is 0.0, expected > 0'),
    ({'momentum': 1.0}, r'sdmgrad: momentum is 1.0, expected in \[0, 1\)'),
  ],
)
def test_out_of_range_is_one_line_error(kwargs, message):
  with pytest.raises(ConfigError, match=message) as err:
    sdmgrad(**kwargs)
  assert '\n' not in str(err.value)


def test_config_key_is_named():
  config = common.base_config('mmoe', 'entire_space')
  config.weighting_name = 'sdmgrad'
  validate.check_config(config)  # The defaults pass.
  config.weighting.sdmgrad.lamda = -1.0
  with pytest.raises(
    ConfigError, match=r'^weighting.sdmgrad.lamda is -1.0, exp'
  ):
    validate.check_config(config)
