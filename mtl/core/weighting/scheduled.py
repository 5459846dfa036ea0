"""Per-epoch geometric loss-weight schedule of PLE.

Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task
Learning (MTL) Model for Personalized Recommendations", RecSys 2020, Sec. 4.3:
w_k(epoch) = w_{k,0} * gamma_k ** epoch, letting a task's weight decay (gamma
< 1) or grow (gamma > 1) as training proceeds.
"""

from collections.abc import Sequence

import jax.numpy as jnp

from mtl.core.weighting.base import EmptyState, WeightingMethod, check_num_tasks
from mtl.errors import ConfigError


def scheduled(
  weights: Sequence[float] | None = None,
  gammas: Sequence[float] | None = None,
) -> WeightingMethod:
  """w_k = base_k * weights_k * gammas_k ** epoch.

  Args:
    weights: initial per-task weights w_{k,0} (None: ones).
    gammas: per-task positive decay factors gamma_k (None: ones).
  """
  for what, values in (('weights', weights), ('gammas', gammas)):
    if values is not None and any(float(v) < 0 for v in values):
      raise ConfigError(
        f'weighting scheduled: {what} {list(values)} must be non-negative'
      )
  if gammas is not None and any(float(g) == 0 for g in gammas):
    raise ConfigError(f'weighting scheduled: gammas {list(gammas)} must be > 0')

  def init(num_tasks):
    check_num_tasks('scheduled', weights, num_tasks, 'weights')
    check_num_tasks('scheduled', gammas, num_tasks, 'gammas')
    return EmptyState()

  def update(base, state, *, epoch, **unused):
    w0 = jnp.ones_like(base) if weights is None else jnp.asarray(weights)
    g = jnp.ones_like(base) if gammas is None else jnp.asarray(gammas)
    epoch = jnp.asarray(epoch, base.dtype)
    return base * w0.astype(base.dtype) * g.astype(base.dtype) ** epoch, state

  return WeightingMethod(init, update)
