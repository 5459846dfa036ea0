"""The optax-style interface every task-balancing method implements.

A method is a pair of pure functions, like an optax
`GradientTransformationExtraArgs`:

  init(num_tasks) -> state                      (a NamedTuple, maybe empty)
  update(weights, state, *, losses, step, epoch, **extra) -> (weights, state)

A method that needs `task_grads` may keep vectors of the shared params in
its state: its init is `init(num_tasks, num_shared_params=None)` (`init_state`
passes the count; None, when only the hyper-parameters are checked, gives
vectors of length 0).

`weights` [T] flows through a chain of methods the way updates flow through
`optax.chain`: the train step starts it at the tasks' base weights. Inputs
beyond `losses` [T], `step` and `epoch` are keyword-only and passed only when
the method names them in `needs`, so the step computes per-task gradients only
for methods that use them (`KNOWN_NEEDS`):

  task_grad_norms  [T] ||d L_t / d W||, W the kernel of the last shared layer
                   (GradNorm's choice), unweighted, of the global batch.
  task_grad_gram   [T, T] Gram matrix G_ij = <g_i, g_j> of the unweighted
                   per-task gradients g_t of the shared params (all
                   `backbone` params flattened; `embed` for ESMM and AITM,
                   whose backbones are task-specific: see
                   task_grads.shared_group), of the global batch.
  task_grad_unit_distances  [T, T] ||u_i - u_j||^2 of the unit gradients
                   u_t = g_t / ||g_t|| of the same shared params, formed
                   from the gradients (exact where 2 - 2 cos_ij from the
                   float32 Gram matrix is not: nearly parallel gradients).
  task_grads       [T, P] the per-task gradients g_t of the same shared
                   params as vectors: each leaf flattened row-major, the
                   leaves in jax.tree order (`task_grads.flat`), float32.
                   Not with sparse embedding tables in the shared group.
  task_grads_parts [K, T, P] the same vectors for each of K = 3 disjoint
                   parts of the global batch (`mtl.core.batch_parts`: part k
                   the rows whose index in the global batch is k mod K), each
                   task's loss the mean over the part's rows: independent
                   stochastic gradients of one step (MoDo's, SDMGrad's
                   multiple sampling). Not with sparse tables either.

All inputs are global (reduced over data-parallel devices) before a method
sees them. Every update accepts and ignores extra keywords it does not use, so
methods compose. The weights an update returns are the ones used for THIS
step; a method that learns its weights (GradNorm, uncertainty) returns the
current ones and keeps the next ones in its state.

Loss-space methods return loss weights. Gradient-space methods (PCGrad, MGDA,
CAGrad, IMTL-G, Nash-MTL) set `combines_gradients=True`: their output is the
vector of coefficients c [T] of the combined backbone gradient
sum_t c_t g_t, computed from the Gram matrix alone (every one of these
methods returns a linear combination of the task gradients); embeddings and
towers take the ordinary weighted sum with the incoming weights. Such a method
must come last in a chain. A method whose combined gradient is not such a
combination (GradDrop's sign masks, DB-MTL's and MoCo's running gradient
estimates, MoDo's part of the batch) sets `combines_gradients='vector'`
(`VECTOR`) and needs `task_grads` or `task_grads_parts`: its update
returns `Combined(weights, gradient)`, the shared group taking `gradient`
[P] and every other group the weighted sum with `weights` [T] (also the
step's reported weights). Learnable quantities
(log-variances, GradNorm's weights) and their inner optimizer states live in
the method's state, never in the model params.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

from mtl.errors import ConfigError

# Inputs a method may ask the train step for, beyond losses, step and epoch.
KNOWN_NEEDS = frozenset(
  {
    'task_grad_norms',
    'task_grad_gram',
    'task_grad_unit_distances',
    'task_grads',
    'task_grads_parts',
  }
)
# The needs that give gradient vectors of the shared params.
VECTOR_NEEDS = frozenset({'task_grads', 'task_grads_parts'})
# `combines_gradients` of a method that returns the combined shared gradient.
VECTOR = 'vector'


class WeightingMethod(NamedTuple):
  init: Callable[..., Any]
  update: Callable[..., tuple[Any, Any]]
  needs: frozenset[str] = frozenset()
  combines_gradients: bool | str = False


class Combined(NamedTuple):
  """What a `VECTOR` method's update returns in place of the weights."""

  weights: jnp.ndarray  # [T] of the other groups' weighted sum
  gradient: jnp.ndarray  # [P] the shared group's gradient (`task_grads.flat`)


def init_state(method: WeightingMethod, num_tasks: int, num_shared_params=None):
  """`method.init`, given the shared param count if it needs `task_grads`."""
  if 'task_grads' in method.needs:
    return method.init(num_tasks, num_shared_params)
  return method.init(num_tasks)


class EmptyState(NamedTuple):
  """State of a stateless method."""


def check_num_tasks(name: str, values, num_tasks: int, what: str):
  """One-line error when a per-task vector does not match the task count."""
  if values is not None and len(values) != num_tasks:
    raise ConfigError(
      f'weighting {name!r}: {len(values)} {what} for {num_tasks} tasks, '
      f'expected {num_tasks}'
    )


def chain(*methods: WeightingMethod) -> WeightingMethod:
  """Applies methods in order, each to the weights the previous produced."""

  def init(num_tasks, num_shared_params=None):
    return tuple(init_state(m, num_tasks, num_shared_params) for m in methods)

  def update(weights, state, **inputs):
    new_state = []
    for method, s in zip(methods, state, strict=True):
      weights, s = method.update(weights, s, **inputs)
      new_state.append(s)
    return weights, tuple(new_state)

  for m in methods[:-1]:
    if m.combines_gradients:  # VECTOR too
      raise ConfigError(
        'chain: a gradient-space method must come last in a chain'
      )
  needs = frozenset().union(*(m.needs for m in methods))
  combines = bool(methods) and methods[-1].combines_gradients
  return WeightingMethod(init, update, needs, combines)
