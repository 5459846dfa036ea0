"""UPGrad against a float64 reference written from the paper (Quinton &
Rey, 2024, Proposition 1) on the explicit gradients: for each task i, v_i =
argmin_{v >= u_i} v^T G v (u_i = w_i e_i), by every support of v - u_i
(float64 solves), certified by its KKT conditions; c = sum_i v_i. G is the
explicit gradients' Gram matrix divided by its trace plus reg_eps I, as in
their torchjd code. With reg_eps = 0 the result is checked to be the
projection itself: J^T v_i lies in the dual cone {x : J x >= 0} and J^T
(v_i - u_i) is a non-negative combination of the rows that x meets at 0.

mtl's c and d = c @ g must be within 1e-5 relative plus LIMIT_FACTOR times
the float32 Gram's own limit (`hard_cases.float32_limit`), as upgrad.py
states.
"""

import functools
import itertools

import numpy as np
import pytest

from mtl.core.weighting.upgrad import upgrad as _upgrad
from mtl.errors import ConfigError
from tests.core.weighting import hard_cases
from tests.core.weighting.hard_cases import float32_limit, rel_err, run

upgrad = functools.cache(_upgrad)

RTOL = 1e-5
LIMIT_FACTOR = 4.0


def project(gram, u):
  """argmin_{v >= u} v^T G v (float64), every support of z = v - u."""
  t = len(gram)
  scale = np.abs(gram).max()
  best, best_value = None, np.inf
  for k in range(t + 1):
    for f in itertools.combinations(range(t), k):
      f = list(f)
      z = np.zeros(t)
      if f:
        z[f] = np.linalg.lstsq(gram[np.ix_(f, f)], -(gram @ u)[f], rcond=None)[
          0
        ]
      v = u + z
      if (z < 0).any() or (gram @ v < -1e-12 * scale * np.abs(v).max()).any():
        continue
      if v @ gram @ v < best_value:
        best, best_value = v, v @ gram @ v
  return best


def reference(g, reg_eps=1e-4, w=None):
  t = len(g)
  w = np.ones(t) if w is None else w
  gram = g @ g.T
  gram = gram / np.trace(gram) + reg_eps * np.eye(t)
  return sum(project(gram, w[i] * np.eye(t)[i]) for i in range(t))


CASES = [
  (name, seed, 1e-4)
  for name in hard_cases.SETS
  if name != 'random10'
  for seed in range(2)
] + [(name, 0, 0.0) for name in ('opposed5', 'scaled5', 'parallel5')]


@pytest.mark.parametrize('name, seed, reg_eps', CASES)
def test_matches_the_float64_reference(name, seed, reg_eps):
  g = hard_cases.gradients(name, seed)
  want = reference(g, reg_eps)
  c, d, _ = run(upgrad(reg_eps=reg_eps), g)
  limit_c, limit_d = float32_limit(lambda x: reference(x, reg_eps), g)
  assert rel_err(c, want) < RTOL + LIMIT_FACTOR * limit_c
  assert rel_err(d, want @ g) < RTOL + LIMIT_FACTOR * limit_d


@pytest.mark.parametrize('name', ['opposed3', 'scaled5', 'opposed_scaled6'])
def test_reg_eps_zero_is_the_projection_onto_the_dual_cone(name):
  g = hard_cases.gradients(name)
  t = len(g)
  gram = g @ g.T / np.trace(g @ g.T)
  scale = np.sqrt(np.trace(g @ g.T))
  for i in range(t):
    u = np.eye(t)[i]
    v = project(gram, u)
    x = v @ g  # the projection of g_i (scaled) onto {x : g x >= 0}
    assert (g @ x >= -1e-9 * scale * np.linalg.norm(x)).all()
    # x - g_i = J^T (v - u), v - u >= 0, only on the constraints x meets.
    z = v - u
    assert (z >= 0).all()
    np.testing.assert_allclose(z * (g @ x), 0.0, atol=1e-9 * scale**2)
  # Gradients that do not conflict are their own projections: c = 1.
  agree = np.abs(hard_cases.gradients('parallel5'))
  c, _, _ = run(upgrad(reg_eps=0.0), agree)
  np.testing.assert_allclose(c, np.ones(5), rtol=1e-6)


def test_more_than_eight_tasks_and_weights():
  g = hard_cases.gradients('random10')
  c, d, _ = run(upgrad(), g)
  want = reference(g)
  assert rel_err(c, want) < RTOL and rel_err(d, want @ g) < RTOL
  g = hard_cases.gradients('scaled3')
  w = np.array([0.5, 2.0, 1.0])  # torchjd's preference vector
  c, _, _ = run(upgrad(), g, weights=w)
  assert rel_err(c, reference(g, w=w)) < RTOL


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(reg_eps=-1e-4), 'reg_eps is -0.0001, expected a number >= 0'),
    (dict(norm_eps=float('nan')), 'norm_eps is nan'),
  ],
)
def test_out_of_range_is_one_config_error(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    _upgrad(**kwargs)
