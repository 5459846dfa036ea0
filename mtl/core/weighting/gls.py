"""Geometric Loss Strategy: minimise the geometric mean of the task losses.

Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR
Workshops (WAD) 2019, Eq. 2:

  L_GLS = (prod_{t=1}^T L_t)^(1 / T).

Its gradient is sum_t (dL_GLS / dL_t) grad L_t, so the loss weights of this
step are

  w_t = dL_GLS / dL_t = L_GLS / (T L_t),

computed in log space (L_GLS = exp(mean_t log L_t)), with each L_t clipped
at `TINY` so that an empty task (loss 0, gradient 0) keeps the others
finite. Equal losses L give w_t = 1 / T: the geometric mean is 1 / T of the
sum at that point, so the step is 1 / T of `equal`'s (Adam removes the scale).
The weights multiply the incoming weights.

LibMTL 1.1.5's `GLS` back-propagates L_GLS itself, so its model gradient is
the one above; the weights it returns for logging, L_t / (T prod_s L_s), are
not dL_GLS / dL_t in general (tests/core/weighting/test_libmtl_fixtures.py
checks both). mtl logs the weights that produce the gradient.
"""

import jax
import jax.numpy as jnp

from mtl.core.weighting.base import EmptyState, WeightingMethod

# Losses are clipped here before the log: the float32 normal range is ~1e-38,
# and 1e-20 is the floor the reference code adds to losses before a log.
TINY = 1e-20


def gls() -> WeightingMethod:
  """GLS (Chennupati et al. 2019): w_t = L_GLS / (T L_t); no parameters."""

  def init(num_tasks):
    del num_tasks
    return EmptyState()

  def update(weights, state, *, losses, **unused):
    losses = jax.lax.stop_gradient(losses.astype(jnp.float32))
    losses = jnp.maximum(losses, TINY)
    log_losses = jnp.log(losses)
    geometric = jnp.exp(jnp.mean(log_losses))
    t = losses.shape[0]
    return weights * geometric / (t * losses), state

  return WeightingMethod(init, update)
