"""MGDA: the min-norm point of the convex hull of the task gradients.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018. The common descent direction is sum_t a_t g_t with a = argmin
over the simplex of ||sum_t a_t g_t||^2 (their eq. 3; they solve it by
Frank-Wolfe, mtl exactly: below). The gradients are first normalised as in
their code: 'none', 'l2' (g_t / ||g_t||), 'loss' (g_t / L_t) or 'loss+'
(g_t / (L_t ||g_t||)); as in their code, the solution a then weighs the
unnormalised losses.

The QP is solved exactly (`min_norm.min_norm_coefficients`: every support's
KKT system for T <= 8, Wolfe's active-set method beyond, each solve refined
on its residual); `num_iterations` Frank-Wolfe steps only start Wolfe's
method. Accuracy against a float64 solve on the explicit gradients
(tests/core/weighting/test_exact_mgda_imtl.py: opposed at cos -0.999, 100-fold
scales, nearly parallel, 2 to 10 tasks, a zero gradient): within 1e-5
relative in a and in d = sum_t a_t g_t (measured: 2.5e-7 and 3e-6), plus 4
times the float32 limit where that is larger: the change of the exact
answer when the Gram's entries move by one float32 ulp, and for d at least
the change from rounding a to float32, 2^-24 sum_t a_t ||g_t|| / ||d|| (0
nearly in the hull: d is a small difference of large gradients).

The Gram matrix is that of the backbone parameter gradients, the MGDA
objective itself; MGDA-UB's shortcut (gradients with respect to the shared
representation, an upper bound of the same objective) saves backward passes
on big encoders and is not needed at recommendation-model sizes. Scale: a
sums to 1; mtl returns T * a, so the step is on the scale of equal weighting's
sum of T task gradients.
"""

import jax.numpy as jnp

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting import min_norm
from mtl.core.weighting.base import EmptyState, WeightingMethod
from mtl.errors import ConfigError

NORMALIZATIONS = ('none', 'l2', 'loss', 'loss+')


def mgda(
  normalization: str = 'none', num_iterations: int = 250
) -> WeightingMethod:
  """MGDA (Sener & Koltun 2018) on the backbone gradients.

  Args:
    normalization: one of NORMALIZATIONS.
    num_iterations: Frank-Wolfe iterations (>= 1) that start Wolfe's
      method for more than 8 tasks.
  """
  if normalization not in NORMALIZATIONS:
    raise ConfigError(
      f'weighting mgda: normalization is {normalization!r}, expected one of '
      f'{", ".join(NORMALIZATIONS)}'
    )
  if not (isinstance(num_iterations, int) and num_iterations >= 1):
    raise ConfigError(
      f'weighting mgda: num_iterations is {num_iterations!r}, expected an '
      'int >= 1'
    )

  def init(num_tasks):
    del num_tasks
    return EmptyState()

  def update(weights, state, *, task_grad_gram, losses, **unused):
    g = gram_lib.weighted(task_grad_gram.astype(jnp.float32), weights)
    t = g.shape[0]
    scale = jnp.ones((t,), jnp.float32)
    if normalization in ('l2', 'loss+'):
      scale = scale / jnp.maximum(gram_lib.norms(g), gram_lib.EPS)
    if normalization in ('loss', 'loss+'):
      scale = scale / jnp.maximum(losses.astype(jnp.float32), gram_lib.EPS)
    a = min_norm.min_norm_coefficients(
      gram_lib.weighted(g, scale), num_iterations
    )
    return t * a * weights, state

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )
