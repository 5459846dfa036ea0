"""Gram-matrix helpers for the gradient-space methods.

Every gradient-space method in mtl returns coefficients c [T] of the combined
backbone gradient sum_t c_t g_t, computed from the Gram matrix G_ij =
<g_i, g_j> alone (`mtl.core.weighting.base`). Methods act on the weighted
gradients w_t g_t (`weighted`), then fold w back into c (c_t * w_t), so with
the default weights of one nothing changes.
"""

import jax
import jax.numpy as jnp
from jax import lax

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


def min_norm_coefficients(
  gram: jnp.ndarray, num_iterations: int = 250
) -> jnp.ndarray:
  """argmin over the simplex of a^T G a: the min-norm point of the hull.

  Exact for T <= MAX_EXACT_TASKS: every support S of the solution is tried,
  each by its KKT system [[G_S, 1], [1^T, 0]] [a; mu] = [0; 1] (a
  pseudo-inverse handles a singular G_S, e.g. identical gradients, with the
  minimum-norm, i.e. most even, solution), and the best feasible one is
  kept; 2^T small solves, vmapped. Beyond that, Sener & Koltun's Frank-Wolfe
  with exact line search, `num_iterations` steps from the uniform point.
  """
  t = gram.shape[0]
  gram = gram / jnp.maximum(jnp.max(jnp.abs(jnp.diag(gram))), EPS)
  if t <= MAX_EXACT_TASKS:
    return _min_norm_exact(gram)

  def body(_, a):
    grad = gram @ a
    d = jax.nn.one_hot(jnp.argmin(grad), t, dtype=a.dtype) - a
    dgd = d @ gram @ d
    gamma = jnp.clip(-(a @ gram @ d) / jnp.maximum(dgd, EPS), 0.0, 1.0)
    return a + jnp.where(dgd > EPS, gamma, 0.0) * d

  return lax.fori_loop(0, num_iterations, body, jnp.full((t,), 1.0 / t))


MAX_EXACT_TASKS = 8


def _min_norm_exact(gram: jnp.ndarray) -> jnp.ndarray:
  t = gram.shape[0]
  masks = support_masks(t, gram.dtype)  # every non-empty support

  def solve(m):
    on = m[:, None] * m[None, :]
    kkt = jnp.zeros((t + 1, t + 1), gram.dtype)
    kkt = kkt.at[:t, :t].set(gram * on + jnp.diag(1.0 - m))
    kkt = kkt.at[:t, t].set(m).at[t, :t].set(m)
    rhs = jnp.zeros((t + 1,), gram.dtype).at[t].set(1.0)
    a = (jnp.linalg.pinv(kkt) @ rhs)[:t] * m
    ok = (a >= -1e-6).all() & (jnp.abs(a.sum() - 1.0) < 1e-4)
    a = jnp.clip(a, 0.0, None)
    a = a / jnp.maximum(a.sum(), EPS)
    return a, jnp.where(ok, a @ gram @ a, jnp.inf)

  candidates, values = jax.vmap(solve)(masks)
  # Ties (equal values within rounding) go to the larger support: among
  # equally short points, the most even combination.
  best = jnp.min(values)
  tie = values <= best + 1e-6 * jnp.maximum(jnp.abs(best), EPS)
  size = jnp.where(tie, masks.sum(1), -1.0)
  return candidates[jnp.argmax(size)]
