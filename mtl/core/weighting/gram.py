"""Gram-matrix helpers for the gradient-space methods.

A gradient-space method that returns coefficients c [T] of the combined
backbone gradient sum_t c_t g_t computes them from the Gram matrix G_ij =
<g_i, g_j> alone (`mtl.core.weighting.base`). Methods act on the weighted
gradients w_t g_t (`weighted`), then fold w back into c (c_t * w_t), so with
the default weights of one nothing changes.
"""

import jax.numpy as jnp

EPS = 1e-12


def weighted(gram: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """The Gram matrix of w_t g_t: diag(w) G diag(w)."""
  return weights[:, None] * gram * weights[None, :]


def norms(gram: jnp.ndarray) -> jnp.ndarray:
  """||g_t|| [T], zero-safe."""
  return jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))


# A gradient with ||g_t||^2 below this fraction of the largest one's is
# treated as zero (its direction is rounding noise in float32).
DEAD = 1e-20


def scaled(gram: jnp.ndarray):
  """(G / max_t G_tt, norms of that, live mask): the scale-free form.

  `live` marks the gradients that are not zero (`DEAD`); the dead ones' norms
  are set to 1 so that dividing by them is safe (mask their results).
  """
  gram = gram / jnp.maximum(jnp.max(jnp.diag(gram)), 1e-30)
  live = jnp.diag(gram) > DEAD
  n = jnp.where(live, norms(gram), 1.0)
  return gram, n, live


def cosines(gram: jnp.ndarray, n: jnp.ndarray, live: jnp.ndarray):
  """cos(g_i, g_j) [T, T] from `scaled`'s output; 0 on dead rows/columns."""
  cos = jnp.clip(gram / n[:, None] / n[None, :], -1.0, 1.0)
  return jnp.where(live[:, None] & live[None, :], cos, 0.0)


def support_masks(t: int, dtype=jnp.float32) -> jnp.ndarray:
  """[2^T - 1, T] 0/1 rows: every non-empty subset of the T tasks."""
  masks = (jnp.arange(1, 2**t)[:, None] >> jnp.arange(t)[None, :]) & 1
  return masks.astype(dtype)


def symmetric_pinv(a: jnp.ndarray, cutoff: float) -> jnp.ndarray:
  """Pseudo-inverse of a symmetric matrix: eigenvalues |l| <= cutoff -> 0.

  An absolute cutoff: the caller scales `a` so that its entries' rounding
  noise sits below it (float32 entries of size ~1 carry ~1e-7).
  """
  values, vectors = jnp.linalg.eigh(a)
  inverse = jnp.where(jnp.abs(values) > cutoff, 1.0 / values, 0.0)
  return (vectors * inverse[None, :]) @ vectors.T


def project_simplex(y: jnp.ndarray) -> jnp.ndarray:
  """Euclidean projection onto the simplex (sort-based)."""
  t = y.shape[0]
  u = jnp.sort(y)[::-1]
  cumulative = jnp.cumsum(u) - 1.0
  k = jnp.arange(1, t + 1, dtype=y.dtype)
  count = jnp.sum(u - cumulative / k > 0)
  theta = cumulative[count - 1] / count
  return jnp.maximum(y - theta, 0.0)
