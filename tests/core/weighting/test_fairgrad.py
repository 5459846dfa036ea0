"""FairGrad against a float64 reference written from the paper (Ban & Ji,
ICML 2024): w > 0 with G w = w^{-1/alpha} on the explicit gradients' Gram
matrix, found as the released code does (SciPy's least_squares on G w -
w^{-1/alpha} from w = 1/T, bounds w >= 0), here in float64 with tight
tolerances, and accepted only at a relative residual below 1e-9.

mtl's c and d = c @ g must be within 1e-5 relative plus LIMIT_FACTOR times
the float32 Gram's own limit (`hard_cases.float32_limit`), as fairgrad.py
states; the paper's condition (G c) * c^{1/alpha} = 1 is checked in float64.
"""

import functools

import numpy as np
import pytest
from scipy import optimize

from mtl.core.weighting.fairgrad import fairgrad as _fairgrad
from mtl.errors import ConfigError
from tests.core.weighting import hard_cases
from tests.core.weighting.hard_cases import float32_limit, rel_err, run

fairgrad = functools.cache(_fairgrad)

RTOL = 1e-5
LIMIT_FACTOR = 4.0


def reference(g, alpha=1.0):
  gram = g @ g.T
  t = len(g)

  def residual(w):
    return gram @ w - np.power(1.0 / w, 1.0 / alpha)

  def jac(w):
    return gram + np.diag(np.power(w, -1.0 / alpha - 1.0) / alpha)

  scale = np.max(np.diag(gram))
  w0 = np.ones(t) / t
  w = optimize.least_squares(
    residual,
    w0,
    jac=jac,
    bounds=(0, np.inf),
    xtol=1e-15,
    ftol=1e-15,
    gtol=1e-15,
    max_nfev=10000,
  ).x
  rel = np.abs(w * (gram @ w) / np.power(w, 1 - 1 / alpha) - 1.0)
  assert rel.max() < 1e-9, (rel.max(), scale)
  return w


# Sets where a solution exists: no positive combination of the gradients
# is zero (g_2 = -3 g_1 rotated by 2.6 degrees still has one).
SOLVABLE = ['scaled5', 'parallel5', 'random6']
CASES = (
  [(name, seed, 1.0) for name in SOLVABLE for seed in range(2)]
  + [('opposed2', seed, 1.0) for seed in range(2)]
  # Other alphas on five tasks (one compilation each).
  + [(n, 0, a) for n in ('scaled5', 'parallel5') for a in (0.5, 2.0)]
)


@pytest.mark.parametrize('name, seed, alpha', CASES)
def test_matches_the_float64_reference(name, seed, alpha):
  g = hard_cases.gradients(name, seed)
  want = reference(g, alpha)
  c, d, _ = run(fairgrad(alpha), g)
  limit_c, limit_d = float32_limit(lambda x: reference(x, alpha), g)
  assert rel_err(c, want) < RTOL + LIMIT_FACTOR * limit_c
  assert rel_err(d, want @ g) < RTOL + LIMIT_FACTOR * limit_d
  if limit_c < 1e-6:  # the paper's condition, in float64
    gram = g @ g.T
    np.testing.assert_allclose(gram @ c * c ** (1 / alpha), 1.0, rtol=1e-4)


def test_alpha_one_is_nash_bargaining_and_scales_exactly():
  # alpha = 1: G w = 1 / w; orthogonal g: w_t = 1 / ||g_t||.
  g = np.array([[3.0, 0.0], [0.0, 0.5]])
  c, _, _ = run(fairgrad(1.0), g)
  np.testing.assert_allclose(c, [1 / 3, 2.0], rtol=RTOL)
  # alpha = 2: G_tt w_t = w_t^{-1/2}: w_t = ||g_t||^{-4/3}.
  c, _, _ = run(fairgrad(2.0), g)
  np.testing.assert_allclose(c, [3 ** (-4 / 3), 0.5 ** (-4 / 3)], rtol=RTOL)
  # s G: w scales by s^{-alpha / (1 + alpha)}.
  g = hard_cases.gradients('scaled5')
  c1, _, _ = run(fairgrad(2.0), g)
  c2, _, _ = run(fairgrad(2.0), 10 * g)
  np.testing.assert_allclose(c2, c1 * 100 ** (-2 / 3), rtol=RTOL)


def test_zero_gradient_and_no_solution():
  rng = np.random.default_rng(0)
  g = hard_cases.with_zero(rng)
  c, _, state = run(fairgrad(), g)
  live = [0, 2]
  assert c[1] == 0.0
  np.testing.assert_allclose(c[live], reference(g[live]), rtol=RTOL)
  # g_2 = -g_1: no w > 0 solves it; the previous w is kept.
  opposite = np.array([[1.0, 2.0, 0.0], [-2.0, -4.0, 0.0], [0.0, 0.0, 1.0]])
  c2, _, _ = run(fairgrad(), opposite, state=state, step=1)
  np.testing.assert_allclose(c2, c)


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(alpha=0.0), 'alpha is 0.0, expected a number > 0'),
    (dict(alpha=-1.0), 'alpha is -1.0'),
    (dict(max_iterations=0), 'max_iterations is 0, expected an int >= 1'),
  ],
)
def test_out_of_range_is_one_config_error(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    _fairgrad(**kwargs)
