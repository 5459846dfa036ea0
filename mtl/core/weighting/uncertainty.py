"""Uncertainty weighting: each task's homoscedastic noise, learned.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses
for Scene Geometry and Semantics", CVPR 2018, Eq. 7 and 10. With
s_k = log sigma_k^2 learned per task, the objective is

  regression:      0.5 * exp(-s_k) * L_k + 0.5 * s_k
  classification:        exp(-s_k) * L_k + 0.5 * s_k

so the model sees the loss weight c_k * exp(-s_k) (c = 0.5 or 1), and s_k
follows the gradient of the objective with L_k held fixed. At the optimum of
the regression form s* = log L; of the classification form s* = log(2 L).

The s_k live in the method's state with their own Adam state (never in the
model params). The weights returned are those of the current s (this step's);
the state then holds s after one Adam step. The default learning rate 1e-2
moves s by about 0.01 per step: log-losses change by O(1) over a few hundred
steps, and the model's own lr (1e-3 to 2e-3) would make s lag far behind.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl.core.weighting.base import WeightingMethod, check_num_tasks
from mtl.errors import ConfigError

FORMS = {'regression': 0.5, 'classification': 1.0}


class UncertaintyState(NamedTuple):
  log_vars: jnp.ndarray  # s_k = log sigma_k^2 [T]
  opt_state: Any


def uncertainty(
  forms: str | Sequence[str] = 'classification',
  learning_rate: float = 1e-2,
  init: float = 0.0,
) -> WeightingMethod:
  """Learned per-task weights c_k * exp(-s_k) (Kendall et al. 2018).

  Args:
    forms: 'regression' or 'classification' for every task, or one per task
      (default: classification, as recommendation tasks mostly are binary).
    learning_rate: Adam learning rate of the s_k (> 0).
    init: initial s_k (0: sigma = 1).
  """
  per_task = (forms,) if isinstance(forms, str) else tuple(forms)
  for f in per_task:
    if f not in FORMS:
      raise ConfigError(
        f'weighting uncertainty: forms has {f!r}, expected '
        f'{" or ".join(repr(k) for k in FORMS)}'
      )
  if not learning_rate > 0:
    raise ConfigError(
      f'weighting uncertainty: learning_rate is {learning_rate}, expected > 0'
    )
  tx = optax.adam(learning_rate)

  def coefficients(num_tasks):
    if isinstance(forms, str):
      return jnp.full((num_tasks,), FORMS[forms], jnp.float32)
    return jnp.asarray([FORMS[f] for f in per_task], jnp.float32)

  def init_fn(num_tasks):
    if not isinstance(forms, str):
      check_num_tasks('uncertainty', per_task, num_tasks, 'forms')
    s = jnp.full((num_tasks,), float(init), jnp.float32)
    return UncertaintyState(s, tx.init(s))

  def update(weights, state, *, losses, **unused):
    c = coefficients(weights.shape[0])
    s = state.log_vars
    losses = jax.lax.stop_gradient(losses.astype(jnp.float32))

    def objective(s):
      return jnp.sum(c * jnp.exp(-s) * losses + 0.5 * s)

    updates, opt_state = tx.update(jax.grad(objective)(s), state.opt_state)
    new_s = optax.apply_updates(s, updates)
    return weights * c * jnp.exp(-s), UncertaintyState(new_s, opt_state)

  return WeightingMethod(init_fn, update)
