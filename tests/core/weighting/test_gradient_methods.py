"""Gradient-space methods against direct numpy/scipy implementations that
work on explicit gradient vectors g [T, P] (the oracle), and hand-derived
answers. Each method sees only G = g g^T and returns c; the combined gradient
is c @ g."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from mtl.core.weighting.cagrad import cagrad
from mtl.core.weighting.imtl import imtl_g
from mtl.core.weighting.mgda import mgda
from mtl.core.weighting.nash_mtl import nash_mtl
from mtl.core.weighting.pcgrad import pcgrad
from mtl.errors import ConfigError

# One method object per factory and arguments, and one jitted update per
# method: `combined` then compiles a method once per task count, not once a
# call. The methods are pure (their state goes in and comes out), so tests
# can share them.
pcgrad, mgda, cagrad, imtl_g, nash_mtl = (
  functools.cache(f) for f in (pcgrad, mgda, cagrad, imtl_g, nash_mtl)
)
_jitted_update = functools.cache(lambda method: jax.jit(method.update))

METHODS = {
  'pcgrad': pcgrad,
  'mgda': mgda,
  'cagrad': cagrad,
  'imtl_g': imtl_g,
  'nash_mtl': nash_mtl,
}


def combined(method, g, *, step=0, weights=None, losses=None, state=None):
  g = np.asarray(g, np.float64)
  t = g.shape[0]
  state = method.init(t) if state is None else state
  c, state = _jitted_update(method)(
    jnp.ones(t) if weights is None else jnp.asarray(weights, jnp.float32),
    state,
    task_grad_gram=jnp.asarray(g @ g.T, jnp.float32),
    losses=jnp.ones(t) if losses is None else jnp.asarray(losses),
    step=step,
  )
  return np.asarray(c), np.asarray(c) @ g, state


# ---- PCGrad ----------------------------------------------------------------


def test_pcgrad_two_conflicting_vectors_by_hand():
  g1, g2 = np.array([1.0, 0.0]), np.array([-1.0, 1.0])
  # <g1, g2> = -1 < 0: g1' = g1 - (-1/2) g2 = g1 + 0.5 g2 = (0.5, 0.5);
  # g2' = g2 - (-1/1) g1 = g1 + g2 = (0, 1).
  # Sum: (0.5, 1.5) = 2 g1 + 1.5 g2.
  c, d, _ = combined(pcgrad(), [g1, g2])
  np.testing.assert_allclose(c, [2.0, 1.5], rtol=1e-6)
  np.testing.assert_allclose(d, [0.5, 1.5], rtol=1e-6)


def test_pcgrad_leaves_agreeing_gradients_alone():
  c, _, _ = combined(pcgrad(), [[1.0, 0.2], [0.5, 1.0], [1.0, 1.0]])
  np.testing.assert_allclose(c, [1.0, 1.0, 1.0])


def _pcgrad_numpy(g, orders):
  out = []
  for i, order in enumerate(orders):
    gi = g[i].copy()
    for j in order:
      if j != i and gi @ g[j] < 0:
        gi = gi - (gi @ g[j]) / (g[j] @ g[j]) * g[j]
    out.append(gi)
  return np.sum(out, axis=0)


def test_pcgrad_three_tasks_matches_numpy_with_the_same_order():
  rng = np.random.default_rng(0)
  g = rng.normal(size=(3, 7))
  g[2] = -g[0] + 0.3 * rng.normal(size=7)  # Make conflicts certain.
  step, seed = 5, 0
  key = jax.random.fold_in(jax.random.key(seed), step)
  orders = [
    np.asarray(jax.random.permutation(jax.random.fold_in(key, i), 3))
    for i in range(3)
  ]
  _, d, _ = combined(pcgrad(seed), g, step=step)
  np.testing.assert_allclose(d, _pcgrad_numpy(g, orders), rtol=1e-4, atol=1e-5)


# ---- MGDA ------------------------------------------------------------------


def test_mgda_two_tasks_is_the_closed_form_min_norm_point():
  g1, g2 = np.array([1.0, 0.0]), np.array([-0.5, 2.0])
  # gamma = clip(<g2 - g1, g2> / ||g1 - g2||^2, 0, 1) weighs g1.
  gamma = np.clip((g2 - g1) @ g2 / np.sum((g1 - g2) ** 2), 0, 1)
  c, _, _ = combined(mgda(), [g1, g2])
  np.testing.assert_allclose(c, 2 * np.array([gamma, 1 - gamma]), rtol=1e-5)


def _min_norm_scipy(g):
  t = g.shape[0]
  res = optimize.minimize(
    lambda a: np.sum((a @ g) ** 2),
    np.full(t, 1 / t),
    constraints=[{'type': 'eq', 'fun': lambda a: a.sum() - 1}],
    bounds=[(0, 1)] * t,
    method='SLSQP',
    options={'ftol': 1e-12, 'maxiter': 500},
  )
  return res.x


@pytest.mark.parametrize('seed', range(3))
def test_mgda_matches_scipy_on_random_gradients(seed):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(4, 6))
  c, d, _ = combined(mgda(), g)
  want = _min_norm_scipy(g) @ g
  # Same min-norm value (the point is unique): ||d/T|| == ||want||.
  np.testing.assert_allclose(
    np.linalg.norm(d / 4), np.linalg.norm(want), rtol=2e-3, atol=1e-6
  )
  np.testing.assert_allclose(c.sum(), 4.0, rtol=1e-5)


def test_mgda_l2_normalisation_weighs_the_unnormalised_losses():
  g = np.array([[10.0, 0.0], [0.0, 1.0]])
  # Normalised gradients are orthonormal: a = (1/2, 1/2), used as is.
  c, _, _ = combined(mgda('l2'), g)
  np.testing.assert_allclose(c, [1.0, 1.0], rtol=1e-5)


# ---- CAGrad ----------------------------------------------------------------


def test_cagrad_with_c_zero_is_the_sum_of_gradients():
  rng = np.random.default_rng(1)
  c, _, _ = combined(cagrad(c=0.0), rng.normal(size=(3, 5)))
  np.testing.assert_allclose(c, [1.0, 1.0, 1.0], rtol=1e-6)


def _cagrad_numpy(g, c_param, rescale=1):
  t = g.shape[0]
  gram = g @ g.T
  g0_norm = np.sqrt(gram.mean())
  radius = c_param * g0_norm

  def obj(w):
    return w @ gram @ np.full(t, 1 / t) + radius * np.sqrt(w @ gram @ w + 1e-12)

  res = optimize.minimize(
    obj,
    np.full(t, 1 / t),
    bounds=[(0, 1)] * t,
    constraints=[{'type': 'eq', 'fun': lambda w: w.sum() - 1}],
    method='SLSQP',
    options={'ftol': 1e-12, 'maxiter': 500},
  )
  gw = res.x @ g
  d = g.mean(0) + radius / np.linalg.norm(gw) * gw
  return d / {0: 1, 1: 1 + c_param**2, 2: 1 + c_param}[rescale], obj, res.fun


@pytest.mark.parametrize('seed', range(3))
def test_cagrad_matches_scipy_slsqp(seed):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(3, 8))
  g[1] = -0.7 * g[0] + 0.5 * rng.normal(size=8)
  _, d, _ = combined(cagrad(c=0.4), g)
  want, _, _ = _cagrad_numpy(g, 0.4)
  np.testing.assert_allclose(d / 3, want, rtol=1e-4, atol=1e-5)


def test_cagrad_improves_the_worst_task_over_the_mean():
  g = np.array([[1.0, 0.1], [-0.9, 0.3]])  # Strong conflict.
  _, d, _ = combined(cagrad(c=0.8, rescale=0), g)
  mean = g.mean(0)
  worst = lambda v: np.min(g @ v / np.linalg.norm(v))  # noqa: E731
  assert worst(d) > worst(mean)


# ---- IMTL-G ----------------------------------------------------------------


@pytest.mark.parametrize('seed', range(3))
def test_imtl_projections_on_every_unit_gradient_are_equal(seed):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(3, 6)) * np.array([[1.0], [5.0], [0.2]])
  c, d, _ = combined(imtl_g(), g)
  u = g / np.linalg.norm(g, axis=1, keepdims=True)
  proj = u @ d
  np.testing.assert_allclose(proj, proj[0], rtol=1e-3)
  np.testing.assert_allclose(c.sum(), 3.0, rtol=1e-4)


def test_imtl_two_tasks_by_hand():
  g1, g2 = np.array([2.0, 0.0]), np.array([0.0, 1.0])
  # alpha_2 = <g1, u1 - u2> / <g1 - g2, u1 - u2> = 2 / (2 + 1) = 2/3;
  # d = (1/3) g1 + (2/3) g2 = (2/3, 2/3): equal projections on u1, u2.
  c, d, _ = combined(imtl_g(), [g1, g2])
  np.testing.assert_allclose(c, 2 * np.array([1 / 3, 2 / 3]), rtol=1e-5)
  np.testing.assert_allclose(d / 2, [2 / 3, 2 / 3], rtol=1e-5)


# ---- Nash-MTL --------------------------------------------------------------


@pytest.mark.parametrize('seed', range(3))
def test_nash_solves_g_alpha_equals_one_over_alpha(seed):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(3, 10))
  alpha, _, _ = combined(nash_mtl(), g)
  gram = g @ g.T  # unnormalised, as the paper (and the released code)
  assert (alpha > 0).all()
  np.testing.assert_allclose(gram @ alpha, 1 / alpha, rtol=1e-4)


def test_nash_orthogonal_gradients_give_one_over_the_norms():
  g = np.array([[3.0, 0.0], [0.0, 0.5]])
  alpha, d, _ = combined(nash_mtl(), g)
  # G = diag(9, 0.25): alpha_i = 1 / sqrt(G_ii) = 1 / ||g_i||.
  np.testing.assert_allclose(alpha, 1 / np.array([3.0, 0.5]), rtol=1e-5)
  # <g_i, d> = 1 / alpha_i: the bargaining condition; ||d|| = sqrt(T).
  np.testing.assert_allclose(g @ d, 1 / alpha, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(d), np.sqrt(2), rtol=1e-5)


def test_nash_update_every_reuses_alpha():
  rng = np.random.default_rng(4)
  method = nash_mtl(update_every=3)
  a0, _, state = combined(method, rng.normal(size=(2, 4)), step=0)
  a1, _, _ = combined(method, rng.normal(size=(2, 4)), step=1, state=state)
  np.testing.assert_allclose(a1, a0)


# ---- all of them -----------------------------------------------------------


@pytest.mark.parametrize('name', sorted(METHODS))
def test_equal_gradients_give_equal_coefficients(name):
  g = np.tile([[0.3, -1.0, 2.0]], (3, 1))
  c, _, _ = combined(METHODS[name](), g)
  # float32 solves of an exactly singular system: equal to 1e-3.
  np.testing.assert_allclose(c, c[0], rtol=1e-3)
  assert (c > 0).all()


@pytest.mark.parametrize('name', sorted(METHODS))
@pytest.mark.parametrize(
  'g',
  [
    [[0.0, 0.0, 0.0], [1.0, 2.0, -1.0], [0.5, -1.0, 1.0]],  # a zero gradient
    [[1e6, 2e6, 0.0], [-3e6, 1e6, 1e6], [1e6, 0.0, 5e5]],  # huge values
    [[1e-6, 0.0, 0.0], [0.0, 1e-6, 0.0], [0.0, 0.0, 1e-6]],  # tiny values
    [[1.0, 2.0, 0.0], [-1.0, -2.0, 0.0], [0.0, 0.0, 1.0]],  # g_2 = -g_1
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # all zero
  ],
)
def test_finite_coefficients_on_degenerate_gradients(name, g):
  c, d, _ = combined(METHODS[name](), g)
  assert np.isfinite(c).all() and np.isfinite(d).all(), c


@pytest.mark.parametrize('name', sorted(METHODS))
def test_jit_over_steps_with_weights(name):
  rng = np.random.default_rng(2)
  method = METHODS[name]()
  state = None
  for step in range(4):
    c, _, state = combined(
      method,
      rng.normal(size=(2, 5)),
      step=step,
      weights=[2.0, 0.5],
      losses=[0.3, 0.6],
      state=state,
    )
    assert np.isfinite(c).all() and c.shape == (2,)


@pytest.mark.parametrize(
  'factory, kwargs, message',
  [
    (pcgrad, {'seed': 'a'}, "pcgrad: seed is 'a', expected an int"),
    (mgda, {'normalization': 'l1'}, "normalization is 'l1', expected one of"),
    (mgda, {'num_iterations': 0}, 'num_iterations is 0, expected an int'),
    (cagrad, {'c': -0.1}, 'cagrad: c is -0.1, expected >= 0'),
    (cagrad, {'rescale': 3}, 'rescale is 3, expected 0, 1 or 2'),
    (cagrad, {'tol': 0.0}, 'cagrad: tol is 0.0, expected > 0'),
    (cagrad, {'max_iterations': 0}, 'max_iterations is 0, expected an int'),
    (nash_mtl, {'update_every': 0}, 'update_every is 0, expected an int'),
    (nash_mtl, {'max_iterations': 1.5}, 'max_iterations is 1.5, expected'),
  ],
)
def test_bad_hyper_parameters_are_one_line_errors(factory, kwargs, message):
  with pytest.raises(ConfigError, match=message.replace('(', r'\(')) as err:
    factory(**kwargs)
  assert '\n' not in str(err.value)
