"""Dynamic Weight Average: weight a task by how slowly its loss falls.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR
2019, Eq. 7:

  w_k = T * exp(r_k / temperature) / sum_j exp(r_j / temperature),
  r_k = Lbar_k(n - 1) / Lbar_k(n - 2),

where Lbar_k(n) is task k's average loss over window n. The paper's window
is an epoch; here it is `window_steps` steps, so the method behaves the same
on any dataset size (set it to the steps per epoch for the paper's form). The
weights are 1 until two windows are complete, and multiply the incoming
weights.
"""

from typing import NamedTuple

import jax.numpy as jnp

from mtl.core.weighting.base import WeightingMethod
from mtl.errors import ConfigError


class DWAState(NamedTuple):
  window_sum: jnp.ndarray  # [T] losses summed over the current window
  count: jnp.ndarray  # int32: steps in the current window
  last: jnp.ndarray  # [T] mean loss of window n - 1
  before_last: jnp.ndarray  # [T] mean loss of window n - 2
  windows_done: jnp.ndarray  # int32: completed windows, saturating at 2


def dwa(temperature: float = 2.0, window_steps: int = 100) -> WeightingMethod:
  """DWA (Liu et al. 2019) over windows of `window_steps` steps.

  Args:
    temperature: > 0; larger is softer (more equal) weights; the paper: 2.
    window_steps: int >= 1, steps averaged per window (the paper: an epoch).
  """
  if not temperature > 0:
    raise ConfigError(
      f'weighting dwa: temperature is {temperature}, expected > 0'
    )
  if isinstance(window_steps, bool) or not (
    isinstance(window_steps, int) and window_steps >= 1
  ):
    raise ConfigError(
      f'weighting dwa: window_steps is {window_steps!r}, expected an int >= 1'
    )

  def init(num_tasks):
    # Distinct arrays: a donated state must not hold one buffer twice.
    def zeros():
      return jnp.zeros((num_tasks,), jnp.float32)

    def zero():
      return jnp.zeros((), jnp.int32)

    return DWAState(zeros(), zero(), zeros(), zeros(), zero())

  def update(weights, state, *, losses, **unused):
    t = weights.shape[0]
    r = state.last / jnp.maximum(state.before_last, 1e-12)
    soft = jnp.exp(r / temperature)
    ready = state.windows_done >= 2
    w = jnp.where(ready, t * soft / jnp.sum(soft), jnp.ones_like(soft))

    total = state.window_sum + losses.astype(jnp.float32)
    count = state.count + 1
    closes = count >= window_steps
    mean = total / count.astype(jnp.float32)
    new_state = DWAState(
      window_sum=jnp.where(closes, 0.0, total),
      count=jnp.where(closes, 0, count),
      last=jnp.where(closes, mean, state.last),
      before_last=jnp.where(closes, state.last, state.before_last),
      windows_done=jnp.minimum(
        state.windows_done + closes.astype(jnp.int32), 2
      ),
    )
    return weights * w, new_state

  return WeightingMethod(init, update)
