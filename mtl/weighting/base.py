"""The optax-style interface every task-balancing method implements.

A method is a pair of pure functions, like an optax
`GradientTransformationExtraArgs`:

  init(num_tasks) -> state                      (a NamedTuple, maybe empty)
  update(weights, state, *, losses, step, epoch, **extra) -> (weights, state)

`weights` [T] flows through a chain of methods the way updates flow through
`optax.chain`: the train step starts it at the tasks' base weights. Inputs
beyond `losses` [T], `step` and `epoch` are keyword-only and passed only when
the method names them in `needs` (e.g. 'task_grad_norms' for GradNorm), so the
step computes per-task gradients only for methods that use them. Every update
accepts and ignores extra keywords it does not use, so methods compose.
Learnable quantities (log-variances, GradNorm's weights) and their inner
optimizer states live in the method's state, never in the model params.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

# Inputs a method may ask the train step for, beyond losses, step and epoch.
KNOWN_NEEDS = frozenset({'task_grads', 'task_grad_norms'})


class WeightingMethod(NamedTuple):
  init: Callable[[int], Any]
  update: Callable[..., tuple[jnp.ndarray, Any]]
  needs: frozenset[str] = frozenset()


class EmptyState(NamedTuple):
  """State of a stateless method."""


def check_num_tasks(name: str, values, num_tasks: int, what: str):
  """One-line error when a per-task vector does not match the task count."""
  if values is not None and len(values) != num_tasks:
    raise ValueError(
      f'weighting {name!r}: {len(values)} {what} for {num_tasks} tasks, '
      f'expected {num_tasks}'
    )


def chain(*methods: WeightingMethod) -> WeightingMethod:
  """Applies methods in order, each to the weights the previous produced."""

  def init(num_tasks):
    return tuple(m.init(num_tasks) for m in methods)

  def update(weights, state, **inputs):
    new_state = []
    for method, s in zip(methods, state, strict=True):
      weights, s = method.update(weights, s, **inputs)
      new_state.append(s)
    return weights, tuple(new_state)

  needs = frozenset().union(*(m.needs for m in methods))
  return WeightingMethod(init, update, needs)
