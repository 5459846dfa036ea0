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
  masks = (jnp.arange(1, 2**t)[:, None] >> jnp.arange(t)[None, :]) & 1
  masks = masks.astype(gram.dtype)  # [2^T - 1, T], every non-empty support

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
