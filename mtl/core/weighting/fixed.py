"""Fixed loss weights: L = sum_k w_k L_k, the baseline of every MTL paper.

`equal` keeps the tasks' base weights (all 1 unless a task says otherwise);
`fixed` multiplies them by a given vector, the weighted-sum scalarisation used
for hand-tuned weights and for tracing a Pareto front.
"""

from collections.abc import Sequence

import jax.numpy as jnp

from mtl.core.weighting.base import EmptyState, WeightingMethod, check_num_tasks
from mtl.errors import ConfigError


def fixed(weights: Sequence[float] | None = None) -> WeightingMethod:
  """Multiplies the base weights by `weights` (None: leaves them as they are).

  Args:
    weights: one non-negative weight per task, in the task order of the run.
  """
  if weights is not None:
    weights = tuple(float(w) for w in weights)
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
      raise ConfigError(
        f'weighting fixed: weights {list(weights)} must be non-negative '
        'with at least one positive'
      )

  def init(num_tasks):
    check_num_tasks('fixed', weights, num_tasks, 'weights')
    return EmptyState()

  def update(base, state, **unused):
    if weights is None:
      return base, state
    return base * jnp.asarray(weights, base.dtype), state

  return WeightingMethod(init, update)


def equal() -> WeightingMethod:
  """Every task keeps its base weight (all ones by default)."""
  return fixed(None)
