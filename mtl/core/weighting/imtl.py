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
depends on their arrangement, not on how close they are (for T = 2, alpha =
(||g_2||, ||g_1||) / (||g_1|| + ||g_2||) at any angle, exactly). But 2 - 2
cos_ij from a float32 Gram matrix is known to ~1e-7 only, which moved alpha
by up to 1e-2 on nearly parallel gradients (T = 5, 1 - cos ~ 1e-4); so E is
the need `task_grad_unit_distances`, ||u_i - u_j||^2 formed from the
gradients in the train step (`task_grads.unit_distances`), which keeps
float32's relative precision at any angle; the Gram matrix gives the norms.
E is solved by a symmetric pseudo-inverse whose cutoff (RELATIVE * T times
E's largest entry, at least FLOOR) bounds float32's noise on E: directions
E cannot resolve are dropped, so identical or parallel gradients (E = 0:
every alpha gives the same projections) get alpha ~ 1 / ||g_t||, the limit
of nearly parallel ones, and a zero gradient gets alpha_t = 0. All float32.
Accuracy against the paper's closed form in float64 on the explicit
gradients (tests/core/weighting/test_exact_mgda_imtl.py): within 1e-5 relative
in alpha and in d = sum_t alpha_t g_t, plus 32 times the change of the exact
answer when the gradients move by one float32 ulp or alpha is rounded to
float32 (measured: 3.8e-5 in d for opposed gradients 100-fold apart, T = 6,
where d is a small difference of large gradients; 1.7e-4 for T = 6 at 1 -
cos ~ 1e-6, where the gradients' own float32 rounding moves the exact answer
by 6e-4, while a float32 Gram cannot resolve E there at all). Called
without the distances (outside the train step), E is 2 - 2 cos from the
Gram matrix, with that limit. Scale: alpha sums to 1; mtl returns T *
alpha, the scale of equal weighting's sum of T task gradients.
"""

import jax.numpy as jnp

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import EmptyState, WeightingMethod

# An eigenvalue of E below RELATIVE * T * max E_ij can be float32 noise: E's
# entries carry a few ulps (~5e-7 relative) of rounding, and |lambda| <=
# (T - 1) max |entry| bounds the eigenvalues of a zero-diagonal noise matrix.
# Below FLOOR, E is the rounding of parallel gradients' unit vectors (~1e-14).
RELATIVE = 5e-7
FLOOR = 1e-12


def imtl_g() -> WeightingMethod:
  """IMTL-G (Liu et al. 2021) on the backbone gradients; no parameters."""

  def init(num_tasks):
    del num_tasks
    return EmptyState()

  def update(
    weights, state, *, task_grad_gram, task_grad_unit_distances=None, **unused
  ):
    g = gram_lib.weighted(task_grad_gram.astype(jnp.float32), weights)
    if task_grad_unit_distances is None:  # Called without the step: 2 - 2 cos.
      s, n, live = gram_lib.scaled(g)
      e = 2.0 - 2.0 * gram_lib.cosines(s, n, live)
    else:  # Of unit gradients: positive weights do not change it.
      e = task_grad_unit_distances.astype(jnp.float32)
    return imtl_coefficients(g, e) * weights, state

  needs = frozenset({'task_grad_gram', 'task_grad_unit_distances'})
  return WeightingMethod(init, update, needs, combines_gradients=True)


def imtl_coefficients(gram: jnp.ndarray, distances: jnp.ndarray) -> jnp.ndarray:
  """T * alpha [T] of IMTL-G from the Gram matrix (norms) and E."""
  t = gram.shape[0]
  gram, n, live = gram_lib.scaled(gram)
  on = live[:, None] & live[None, :]
  e = jnp.where(on & ~jnp.eye(t, dtype=bool), distances, 0.0)
  cutoff = jnp.maximum(RELATIVE * t * jnp.max(jnp.abs(e)), FLOOR)
  y = gram_lib.symmetric_pinv(e, cutoff) @ live.astype(gram.dtype)
  y = jnp.where(live, y / n, 0.0)
  # Fallback when E holds nothing above noise (all gradients parallel) or
  # sum y vanishes (no alpha summing to 1 projects equally): the parallel
  # limit alpha ~ 1 / ||g_t||; uniform if every gradient is zero.
  parallel = jnp.where(live, 1.0 / n, 0.0)
  parallel = jnp.where(live.any(), parallel, 1.0)
  ok = jnp.abs(y.sum()) > 1e-6 * jnp.abs(y).sum()
  alpha = jnp.where(ok, y, parallel)
  return t * alpha / alpha.sum()
