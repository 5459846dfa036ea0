"""Aligned-MTL: the task gradients aligned to one condition number.

Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment
for Multi-Task Learning", CVPR 2023, Algorithm 1. With the Gram matrix of the
task gradients G = V Lambda V^T (eigenvalues lambda_1 >= ... >= lambda_R > 0
of its rank R), the balance matrix

  B = sqrt(lambda_R) V Lambda^{-1/2} V^T

makes the combined gradient's Jacobian J^T B an isometry up to sqrt(lambda_R)
on the span of the gradients (every singular value equal: condition number
one), and the coefficients are alpha = B w, w the tasks' preference (here
the incoming weights; LibMTL's `B.sum(0)` with weights of one). The released
code (SamsungLabs' and LibMTL's `Aligned_MTL`) keeps only the eigenvalues
above max lambda * T * 1.19e-7 (float32's epsilon) and takes lambda_R as the
least kept one; the paper's B needs a non-singular G. mtl follows the code:
a rank-deficient G (identical or zero gradients, more tasks than the
gradients span) acts on its range, and a zero gradient gets alpha_t = 0.
torchjd's AlignedMTL also offers the median or mean eigenvalue in place of
lambda_R (`scale_mode`); mtl keeps the paper's lambda_R. Its outputs are
test fixtures (tests/core/weighting/test_torchjd_fixtures.py).
All float32, from the Gram matrix. Accuracy against the float64 formula on
the explicit gradients (tests/core/weighting/test_aligned_mtl.py): within 1e-5
relative, plus 4 times the change of the exact answer when the Gram's
entries move by one float32 ulp (nearly parallel gradients: lambda_R, known
to ~1e-7 lambda_1, scales alpha), plus float32's eigendecomposition limit
2^-23 lambda_1 / lambda_R (its eigenvalues carry ~1e-7 lambda_1 absolute:
gradients 100-fold apart, lambda_1 / lambda_R ~ 1e4, measured 4.5e-4).
"""

import jax.numpy as jnp

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import EmptyState, WeightingMethod

# The released code's rank cutoff: lambda > max lambda * T * EPS.
EPS = 1.1920929e-07


def aligned_mtl() -> WeightingMethod:
  """Aligned-MTL (Senushkin et al. 2023) on the backbone gradients; no
  hyper-parameters (the preference is the tasks' weights)."""

  def init(num_tasks):
    del num_tasks
    return EmptyState()

  def update(weights, state, *, task_grad_gram, **unused):
    return balance(task_grad_gram.astype(jnp.float32)) @ weights, state

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )


def balance(gram: jnp.ndarray) -> jnp.ndarray:
  """B [T, T] of Algorithm 1 on G's numerical range (identity when G = 0,
  as the released code)."""
  t = gram.shape[0]
  scale = jnp.maximum(jnp.max(jnp.abs(jnp.diag(gram))), 1e-30)
  values, vectors = jnp.linalg.eigh(gram / scale)
  kept = values > jnp.max(values) * t * EPS
  smallest = jnp.min(jnp.where(kept, values, jnp.inf))
  inverse_sqrt = jnp.where(kept, 1.0 / jnp.sqrt(jnp.where(kept, values, 1)), 0)
  b = jnp.sqrt(smallest) * (vectors * inverse_sqrt[None, :]) @ vectors.T
  # A zero gradient's e_t spans part of G's null space, which float32's
  # eigenvectors may mix with the range by ~1e-5: set its row to zero.
  live = jnp.diag(gram) > gram_lib.DEAD * scale
  b = jnp.where(live[:, None] & live[None, :], b, 0.0)
  return jnp.where(kept.any(), b, jnp.eye(t, dtype=gram.dtype))
