"""IMTL-G: the combined gradient projects equally onto every task gradient.

Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task
Learning", ICLR 2021, the gradient part (IMTL-G). With u_t = g_t / ||g_t||,
D = [g_1 - g_2, ..., g_1 - g_T], U = [u_1 - u_2, ..., u_1 - u_T]:

  alpha_{2:T} = g_1 U^T (D U^T)^{-1},   alpha_1 = 1 - sum alpha_{2:T},

so that g = sum alpha_t g_t has <g, u_t> equal for all t. With M_ij =
<g_i, u_j> = G_ij / ||g_j|| everything comes from the Gram matrix. The
linear system is solved with a vanishing ridge towards the uniform alpha, so
identical gradients (D U^T = 0: every alpha gives the same g) get equal
coefficients instead of a singular solve. Scale: alpha sums to 1; mtl returns
T * alpha, the scale of equal weighting's sum of T task gradients.
"""

import jax.numpy as jnp

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import EmptyState, WeightingMethod


def imtl_g(ridge: float = 1e-6) -> WeightingMethod:
  """IMTL-G (Liu et al. 2021) on the backbone gradients.

  Args:
    ridge: relative strength (> 0, tiny) of the pull towards uniform alpha
      that keeps a singular system solvable.
  """
  if not ridge > 0:
    raise ValueError(f'weighting imtl_g: ridge is {ridge}, expected > 0')

  def init(num_tasks):
    del num_tasks
    return EmptyState()

  def update(weights, state, *, task_grad_gram, **unused):
    g = gram_lib.weighted(task_grad_gram.astype(jnp.float32), weights)
    t = g.shape[0]
    m = g / jnp.maximum(gram_lib.norms(g), gram_lib.EPS)[None, :]  # <g_i,u_j>
    b = m[0, 0] - m[0, 1:]  # (g_1 U^T)_l
    a = m[0, 0] - m[0, 1:][None, :] - m[1:, 0][:, None] + m[1:, 1:]  # D U^T
    # alpha a = b, solved as min ||alpha a - b||^2 + eps ||alpha - 1/T||^2.
    # The floor relative to m[0, 0] = ||g_1|| outweighs float32 rounding of
    # a system that is exactly zero (identical gradients).
    eps = (
      ridge * (jnp.trace(a @ a.T) / max(t - 1, 1))
      + 1e-10 * m[0, 0] ** 2
      + gram_lib.EPS
    )
    prior = jnp.full((t - 1,), 1.0 / t)
    lhs = a @ a.T + eps * jnp.eye(t - 1)
    rhs = a @ b + eps * prior
    rest = jnp.linalg.solve(lhs, rhs)  # lhs is symmetric
    alpha = jnp.concatenate([1.0 - jnp.sum(rest, keepdims=True), rest])
    return t * alpha * weights, state

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )
