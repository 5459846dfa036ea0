"""GradVac (Wang et al. 2021) against a float64 reference, step by step.

The reference is the paper's Algorithm 1 on the explicit gradients g [T, P]
in float64 numpy (Eq. 2's vaccine on the vectors, Eq. 3's EMA of the
targets), with the same per-step task orders as mtl (drawn by jax from
(seed, step, i)). mtl sees only the float32 Gram matrix; the combined
direction d = c @ g must be within 1e-5 relative of the reference's, and the
targets phi_hat within 1e-5, at each of 20 steps with new gradients each
step. Every vaccination decision of the reference is at least `MARGIN` from
its threshold, so float32 rounding cannot flip one.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from mtl.core.weighting.gradvac import gradvac
from mtl.core.weighting.pcgrad import pcgrad
from mtl.errors import ConfigError
from mtl.shell import validate

RTOL = 1e-5
STEPS = 20
MARGIN = 1e-5


@functools.cache
def _permutation(t):
  return jax.jit(lambda key: jax.random.permutation(key, t))


def orders(seed, step, t):
  """Task i's order at a step: permutation(fold_in(fold_in(key(seed), step),
  i)), as in `pcgrad`."""
  key = jax.random.fold_in(jax.random.key(seed), step)
  return [
    np.asarray(_permutation(t)(jax.random.fold_in(key, i))) for i in range(t)
  ]


def reference_step(g, targets, beta, task_orders):
  """Algorithm 1 in float64: (d, new targets, smallest decision margin)."""
  t = len(g)
  targets = targets.copy()
  margin = np.inf
  out = []
  for i in range(t):
    gi = g[i].copy()
    for j in task_orders[i]:
      if j == i:
        continue
      phi = gi @ g[j] / (np.linalg.norm(gi) * np.linalg.norm(g[j]))
      target = targets[i, j]
      margin = min(margin, abs(phi - target))
      if phi < target:
        gi = (
          gi
          + (
            np.linalg.norm(gi)
            * (target * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - target**2))
            / (np.linalg.norm(g[j]) * np.sqrt(1 - target**2))
          )
          * g[j]
        )
      targets[i, j] = (1 - beta) * target + beta * phi
    out.append(gi)
  return np.sum(out, axis=0), targets, margin


def gradients(kind, rng, p=12):
  """One step's gradients [T, P]."""
  if kind == 'opposed':  # g_2 ~ -g_1
    g1 = rng.normal(size=p)
    return np.stack([g1, -g1 + 0.3 * rng.normal(size=p)])
  if kind == 'conflicting':  # cos(g_1, g_2) = -0.6, a third random
    g = rng.normal(size=(3, p))
    n = g[1] - (g[1] @ g[0]) / (g[0] @ g[0]) * g[0]
    g[1] = np.linalg.norm(g[1]) * (
      -0.6 * g[0] / np.linalg.norm(g[0]) + 0.8 * n / np.linalg.norm(n)
    )
    return g
  if kind == 'near_parallel':  # cos >= 0.9999
    base = rng.normal(size=p)
    g = base + 6e-3 * np.linalg.norm(base) * rng.normal(size=(3, p)) / p**0.5
    return g * rng.uniform(0.5, 2.0, size=(3, 1))
  if kind == 'scaled_100x':
    return rng.normal(size=(3, p)) * np.logspace(0, 2, 3)[:, None]
  if kind == 'five':
    return rng.normal(size=(5, p)) + 0.5 * rng.normal(size=p)
  if kind == 'six_scaled':
    return rng.normal(size=(6, p)) * np.logspace(0, 2, 6)[:, None]
  # 'drifting': a shared direction plus noise, cosines around 0.3
  return rng.normal(size=(4, p)) + 0.7 * np.ones(p)


# (gradients, beta, seed of the draws): seeds whose 20 steps keep every
# decision > MARGIN from its threshold (drifting with seed 8 had one 1e-6
# away, where the float32 Gram cannot tell the two sides apart).
CASES = [
  ('opposed', 0.01, 7),
  ('opposed', 0.5, 7),
  ('conflicting', 0.01, 11),
  ('conflicting', 0.5, 11),
  ('near_parallel', 0.01, 13),
  ('scaled_100x', 0.01, 11),
  ('scaled_100x', 0.5, 11),
  ('five', 0.01, 4),
  ('five', 0.5, 4),
  ('six_scaled', 0.1, 10),
  ('drifting', 0.5, 1),
]


@functools.cache
def _compiled(beta, seed=0):
  method = gradvac(beta=beta, seed=seed)
  return method, jax.jit(method.update)


def run(method_update, g, state, step, weights=None):
  t = len(g)
  c, state = method_update(
    jnp.ones(t) if weights is None else jnp.asarray(weights, jnp.float32),
    state,
    task_grad_gram=jnp.asarray(g @ g.T, jnp.float32),
    losses=jnp.ones(t),
    step=step,
  )
  return np.asarray(c, np.float64), state


@pytest.mark.parametrize('kind, beta, seed', CASES)
def test_matches_the_reference_over_twenty_steps(kind, beta, seed):
  rng = np.random.default_rng(seed)
  method, update = _compiled(beta)
  first = gradients(kind, rng)
  t = len(first)
  state, targets = method.init(t), np.zeros((t, t))
  vaccinated = 0
  for step in range(STEPS):
    g = first if step == 0 else gradients(kind, rng)
    want, new_targets, margin = reference_step(
      g, targets, beta, orders(0, step, t)
    )
    assert margin > MARGIN, margin  # no decision within rounding of a flip
    c, state = run(update, g, state, step)
    d = c @ g
    assert np.linalg.norm(d - want) <= RTOL * np.linalg.norm(want)
    np.testing.assert_allclose(state.targets, new_targets, atol=RTOL)
    vaccinated += not np.allclose(want, g.sum(0))
    targets = new_targets
  if kind != 'near_parallel':  # there the targets stay below the cosines
    assert vaccinated > 0


def test_incoming_weights_act_on_the_weighted_gradients():
  rng = np.random.default_rng(4)
  method, update = _compiled(0.5)
  weights = np.array([2.0, 0.5, 1.0])
  state, targets = method.init(3), np.zeros((3, 3))
  for step in range(5):
    g = gradients('conflicting', rng)
    want, targets, _ = reference_step(
      weights[:, None] * g, targets, 0.5, orders(0, step, 3)
    )
    c, state = run(update, g, state, step, weights=weights)
    assert np.linalg.norm(c @ g - want) <= RTOL * np.linalg.norm(want)


def test_with_zero_targets_the_first_step_is_pcgrad():
  g = gradients('conflicting', np.random.default_rng(1))
  method, update = _compiled(0.01)
  c, _ = run(update, g, method.init(3), step=7)
  c_pcgrad, _ = run(jax.jit(pcgrad(0).update), g, (), step=7)
  np.testing.assert_allclose(c, c_pcgrad, rtol=1e-5)


def test_by_hand_orthogonal_gradients_and_target_one_half():
  # g1 = (1, 0), g2 = (0, 1), phi = 0 < phi_hat = 0.5: the vaccine adds
  # ||g1|| (0.5 * 1 - 0) / (||g2|| sqrt(0.75)) = 1 / sqrt(3) of g2 to g1,
  # and cos(g1', g2) = (1/sqrt3) / sqrt(1 + 1/3) = 0.5; the same for g2.
  # So c = (1 + 1/sqrt3, 1 + 1/sqrt3); targets <- 0.5 (1 - beta) + 0 beta.
  method, update = _compiled(0.01)
  state = method.init(2)._replace(targets=jnp.array([[0, 0.5], [0.5, 0]]))
  c, state = run(update, np.eye(2), state, step=0)
  np.testing.assert_allclose(c, [1 + 3**-0.5] * 2, rtol=1e-6)
  np.testing.assert_allclose(
    state.targets, [[0, 0.5 * 0.99], [0.5 * 0.99, 0]], rtol=1e-6
  )


@pytest.mark.parametrize(
  'g',
  [
    [[0.0, 0.0, 0.0], [1.0, 2.0, -1.0], [0.5, -1.0, 1.0]],  # a zero gradient
    [[1.0, 2.0, 0.0], [-1.0, -2.0, 0.0], [0.0, 0.0, 1.0]],  # g_2 = -g_1
    [[0.0, 0.0, 0.0]] * 3,  # all zero
    [[1e-6, 0.0, 0.0], [0.0, 1e-6, 0.0], [0.0, 0.0, 1e-6]],  # tiny
  ],
)
def test_degenerate_gradients_stay_finite(g):
  method, update = _compiled(0.5)
  state = method.init(3)
  for step in range(3):
    c, state = run(update, np.asarray(g), state, step)
    assert np.isfinite(c).all() and np.isfinite(state.targets).all()


@pytest.mark.parametrize(
  'kwargs, message',
  [
    ({'beta': 0.0}, 'gradvac: beta is 0.0, expected in'),
    ({'beta': 1.5}, 'gradvac: beta is 1.5, expected in'),
    ({'seed': 'a'}, "gradvac: seed is 'a', expected an int"),
  ],
)
def test_out_of_range_is_one_line_error(kwargs, message):
  with pytest.raises(ConfigError, match=message) as err:
    gradvac(**kwargs)
  assert '\n' not in str(err.value)


def test_config_key_is_named():
  config = common.base_config('mmoe', 'entire_space')
  config.weighting_name = 'gradvac'
  validate.check_config(config)  # The defaults pass.
  config.weighting.gradvac.beta = 2.0
  with pytest.raises(ConfigError, match=r'^weighting.gradvac.beta is 2.0, exp'):
    validate.check_config(config)
