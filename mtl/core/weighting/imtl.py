"""IMTL-G: the combined gradient projects equally onto every task gradient.

Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task
Learning", ICLR 2021, the gradient part (IMTL-G). With u_t = g_t / ||g_t||,
D = [g_1 - g_2, ..., g_1 - g_T], U = [u_1 - u_2, ..., u_1 - u_T], their closed
form is

  alpha_{2:T} = g_1 U^T (D U^T)^{-1},   alpha_1 = 1 - sum alpha_{2:T},

the alpha summing to 1 for which g = sum alpha_t g_t has <g, u_t> equal for
all t. D U^T is nearly singular for nearly parallel gradients (every entry
~ 1 - cos), so mtl solves the same conditions in a form that stays well
conditioned: writing g = sum beta_t u_t (beta_t = alpha_t ||g_t||), equal
projections read C beta = lambda 1 with C the cosine matrix, and with
C = 1 1^T - E / 2, E_ij = ||u_i - u_j||^2 = 2 - 2 cos_ij (the squared
distances of the unit gradients), every solution is beta ~ E^{-1} 1, so

  alpha_t ~ (E^{-1} 1)_t / ||g_t||,   normalised to sum to 1.

E scales with the spread of the gradients' directions: its conditioning
depends on their arrangement, not on how close they are, so no ridge is
needed (for T = 2, alpha = (||g_2||, ||g_1||) / (||g_1|| + ||g_2||) at any
angle, exactly); what remains is the float32 Gram matrix's own limit, 1 -
cos known to ~1e-7. E is solved by a symmetric pseudo-inverse whose cutoff
(CUTOFF * T) bounds float32's noise on E: directions the Gram matrix cannot
resolve are dropped, so identical or parallel gradients (E = 0: every alpha
gives the same projections) get alpha ~ 1 / ||g_t||, the limit of nearly
parallel ones, and a zero gradient gets alpha_t = 0. All float32. Scale:
alpha sums to 1; mtl returns T * alpha, the scale of equal weighting's sum
of T task gradients.
"""

import jax.numpy as jnp

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import EmptyState, WeightingMethod

# An eigenvalue of E below CUTOFF * T can be float32 noise: E's entries carry
# up to ~5e-7 of rounding (Gram matrix and cosines), and |lambda| <=
# (T - 1) max |entry| bounds the eigenvalues of a zero-diagonal noise matrix.
CUTOFF = 5e-7


def imtl_g() -> WeightingMethod:
  """IMTL-G (Liu et al. 2021) on the backbone gradients; no parameters."""

  def init(num_tasks):
    del num_tasks
    return EmptyState()

  def update(weights, state, *, task_grad_gram, **unused):
    g = gram_lib.weighted(task_grad_gram.astype(jnp.float32), weights)
    return imtl_coefficients(g) * weights, state

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )


def imtl_coefficients(gram: jnp.ndarray) -> jnp.ndarray:
  """T * alpha [T] of IMTL-G from the Gram matrix."""
  t = gram.shape[0]
  gram, n, live = gram_lib.scaled(gram)
  cos = gram_lib.cosines(gram, n, live)
  on = live[:, None] & live[None, :]
  e = jnp.where(on & ~jnp.eye(t, dtype=bool), 2.0 - 2.0 * cos, 0.0)
  y = gram_lib.symmetric_pinv(e, CUTOFF * t) @ live.astype(gram.dtype)
  y = jnp.where(live, y / n, 0.0)
  # Fallback when E holds nothing above noise (all gradients parallel) or
  # sum y vanishes (no alpha summing to 1 projects equally): the parallel
  # limit alpha ~ 1 / ||g_t||; uniform if every gradient is zero.
  parallel = jnp.where(live, 1.0 / n, 0.0)
  parallel = jnp.where(live.any(), parallel, 1.0)
  ok = jnp.abs(y.sum()) > 1e-6 * jnp.abs(y).sum()
  alpha = jnp.where(ok, y, parallel)
  return t * alpha / alpha.sum()
