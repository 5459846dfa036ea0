"""Aligned-MTL against a float64 reference written from the paper
(Senushkin et al., CVPR 2023, Algorithm 1) on the explicit gradients.

The reference takes the SVD of the gradients g = U S W^T (not the Gram
matrix): G = U S^2 U^T, so B = s_R U S^{-1} U^T with s_R the least singular
value kept by the released code's rule (s^2 > max s^2 * T * 1.19e-7), and
alpha = B w. mtl's c and d = c @ g must be within 1e-5 relative, plus
LIMIT_FACTOR times the float32 Gram's own limit (`hard_cases.float32_limit`)
plus float32's eigendecomposition limit 2^-23 lambda_1 / lambda_R
(`eigh_limit`), as aligned_mtl.py states. The paper's property is checked
too: the aligned gradients B g have the Gram matrix B G B = s_R^2 on the
span of G.
"""

import functools

import numpy as np
import pytest

from mtl.core.weighting.aligned_mtl import aligned_mtl as _aligned_mtl
from tests.core.weighting import hard_cases
from tests.core.weighting.hard_cases import float32_limit, rel_err, run

aligned_mtl = functools.cache(_aligned_mtl)

RTOL = 1e-5
LIMIT_FACTOR = 4.0


def balance_reference(g):
  u, s, _ = np.linalg.svd(g, full_matrices=False)
  kept = s**2 > np.max(s**2) * len(g) * 1.1920929e-07
  u, s = u[:, kept], s[kept]
  return s[-1] * (u / s) @ u.T


def reference(g, w=None):
  w = np.ones(len(g)) if w is None else w
  return balance_reference(g) @ w


def eigh_limit(g):
  """float32's eigendecomposition: eigenvalues within ~2^-23 lambda_1, so
  lambda_R, and B, to 2^-23 lambda_1 / lambda_R relative."""
  s = np.linalg.svd(g, compute_uv=False) ** 2
  kept = s > np.max(s) * len(g) * 1.1920929e-07
  return 2.0**-23 * s[0] / s[kept][-1]


CASES = [(name, seed) for name in hard_cases.SETS for seed in range(2)]


@pytest.mark.parametrize('name, seed', CASES)
def test_matches_the_float64_reference(name, seed):
  g = hard_cases.gradients(name, seed)
  want = reference(g)
  c, d, _ = run(aligned_mtl(), g)
  limit_c, limit_d = float32_limit(reference, g)
  eig = eigh_limit(g)
  assert rel_err(c, want) < RTOL + LIMIT_FACTOR * limit_c + eig
  assert rel_err(d, want @ g) < RTOL + LIMIT_FACTOR * limit_d + eig


@pytest.mark.parametrize('name', ['scaled5', 'opposed3', 'random6'])
def test_aligned_gradients_have_equal_singular_values(name):
  # B G B = s_R^2 I on a full-rank G: every aligned gradient (B g)_t has
  # squared norm s_R^2 and they are orthogonal.
  g = hard_cases.gradients(name)
  b = balance_reference(g)
  s_min = np.linalg.svd(g, compute_uv=False)[-1]
  np.testing.assert_allclose(
    b @ g @ g.T @ b, s_min**2 * np.eye(len(g)), atol=1e-9
  )
  # mtl's coefficients for one-hot weights are the columns of B.
  t = len(g)
  for i in range(t):
    c, _, _ = run(aligned_mtl(), g, weights=np.eye(t)[i])
    np.testing.assert_allclose(
      c, b[:, i], rtol=1e-4, atol=1e-5 * np.abs(b).max()
    )


def test_weights_are_the_preference_and_rank_deficiency_as_the_code():
  rng = np.random.default_rng(3)
  g = hard_cases.scaled(rng, 3)
  w = np.array([0.5, 2.0, 1.0])
  c, _, _ = run(aligned_mtl(), g, weights=w)
  assert rel_err(c, reference(g, w)) < RTOL
  # A zero gradient and two identical ones: G of rank 2; B on its range.
  g = np.stack([g[0], np.zeros(8), g[0], g[2]])
  c, d, _ = run(aligned_mtl(), g)
  want = reference(g)
  assert want[1] == 0.0
  assert c[1] == 0.0
  assert rel_err(d, want @ g) < RTOL + eigh_limit(g)
  # Every gradient zero: identity (the code's rank-0 case), c = w.
  c, _, _ = run(aligned_mtl(), np.zeros((3, 4)), weights=w)
  np.testing.assert_allclose(c, w)
