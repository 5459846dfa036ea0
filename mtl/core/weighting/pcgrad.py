"""PCGrad: project away the conflicting part of each task's gradient.

Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task
Learning", NeurIPS 2020, Algorithm 1. For each task i, over the other tasks j
in a random order: if <g_i', g_j> < 0,

  g_i' <- g_i' - <g_i', g_j> / ||g_j||^2 * g_j    (against the original g_j),

and the update is sum_i g_i'. Every g_i' stays a combination of the original
gradients, so it is tracked as a row of coefficients C [T, T] over them, and
<g_i', g_j> = (C G)_ij needs only the Gram matrix. The result's coefficients
are the column sums of C: ones when nothing conflicts (equal weighting's sum
of task gradients). The order is a pure function of (seed, step, i).
"""

import jax
import jax.numpy as jnp

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import EmptyState, WeightingMethod
from mtl.errors import ConfigError


def pcgrad(seed: int = 0) -> WeightingMethod:
  """PCGrad (Yu et al. 2020) on the backbone gradients.

  Args:
    seed: the projection order of step k comes from fold_in(key(seed), k).
  """
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise ConfigError(f'weighting pcgrad: seed is {seed!r}, expected an int')

  def init(num_tasks):
    del num_tasks
    return EmptyState()

  def update(weights, state, *, task_grad_gram, step, **unused):
    g = gram_lib.weighted(task_grad_gram.astype(jnp.float32), weights)
    t = g.shape[0]
    key = jax.random.fold_in(jax.random.key(seed), step)
    sq = jnp.maximum(jnp.diag(g), gram_lib.EPS)
    rows = []
    for i in range(t):
      order = jax.random.permutation(jax.random.fold_in(key, i), t)
      c = jax.nn.one_hot(i, t, dtype=jnp.float32)
      for k in range(t):
        j = order[k]
        dot = c @ g[:, j]
        conflict = (dot < 0) & (j != i)
        c = c - jnp.where(conflict, dot / sq[j], 0.0) * jax.nn.one_hot(
          j, t, dtype=jnp.float32
        )
      rows.append(c)
    coefficients = jnp.sum(jnp.stack(rows), axis=0)
    return coefficients * weights, state

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )
