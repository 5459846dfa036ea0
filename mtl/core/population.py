"""Population training: K independent runs in one compiled program.

JAX trains many small models at once by vmapping the step over a stacked
`TrainState` [K, ...]: each member has its own params, optimizer state,
balancing state, rng and data order (its own permutation of the same
device-resident rows), and members may differ in seed, learning rate, task
weights and balancing hyper-parameters. A member with seed s and the config's
other values follows the single run with seed s (tested, to float rounding:
batched matmuls may sum in another order).

Per-member values enter the step as `hparams` (`make_train_step`):
`task_weights` [T] multiply the tasks' base weights, `lr_scale` multiplies
the optimizer's updates (exact for every optimizer of `mtl.core.optim`: their
updates are proportional to the learning rate; FTRL's, of the wide part or a
sparse table, are not: scaled, they are not FTRL at a scaled alpha), and
`member` selects the member's balancing method when members differ in its
hyper-parameters (`switch_methods`: each member's own `WeightingMethod`,
built from concrete values, chosen with `lax.switch`; the methods are
[T]-sized, so evaluating all K branches under vmap costs nothing next to the
model; those of `task_grads` work on [T, P] vectors, K times).
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from mtl.core import task_grads
from mtl.core import train_state as train_state_lib
from mtl.core import train_step as train_step_lib
from mtl.core.weighting.base import WeightingMethod, init_state
from mtl.errors import ConfigError


def stack(trees: Sequence[Any]):
  """Stacks K pytrees of the same structure into one with leaves [K, ...]."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def member(tree, k: int):
  """Member k of a stacked pytree."""
  return jax.tree.map(lambda x: x[k], tree)


def switch_methods(methods: Sequence[WeightingMethod]) -> WeightingMethod:
  """One method whose update runs `methods[member]` (`member` a keyword).

  All methods must be the same method with other hyper-parameters: their
  states must have one structure, and they must need the same inputs.
  """
  first = methods[0]
  for m in methods[1:]:
    if (m.needs, m.combines_gradients) != (
      first.needs,
      first.combines_gradients,
    ):
      raise ConfigError(
        'population: members differ in what their balancing method needs; '
        'a population runs one balancing method with per-member '
        'hyper-parameters'
      )
  if len(methods) == 1:
    return first

  def update(weights, state, *, member, **inputs):
    branches = [lambda w, s, kw, m=m: m.update(w, s, **kw) for m in methods]
    return lax.switch(member, branches, weights, state, inputs)

  return WeightingMethod(
    first.init, update, first.needs, first.combines_gradients
  )


def init_population(
  model, tx, methods, example_features, *, num_tasks: int, init_keys
):
  """Stacked TrainState of K members, member k initialised from init_keys[k].

  Params and optimizer states come from one vmapped init (the same values
  as K separate `init_train_state` calls); each member's balancing state from
  its own method's init.
  """
  keys = jnp.stack(list(init_keys))
  states = jax.vmap(
    lambda key: train_state_lib.init_train_state(
      model, tx, methods[0], example_features, num_tasks=num_tasks, key=key
    )
  )(keys)
  size = task_grads.shared_size(
    model, jax.tree.map(lambda x: x[0], states.params)
  )
  weighting_state = stack(
    [jax.tree.map(jnp.array, init_state(m, num_tasks, size)) for m in methods]
  )
  return states._replace(weighting_state=weighting_state)


def make_population_steps(step, *, batch_size: int, num_steps: int):
  """`num_steps` steps of every member in one dispatch.

  Returns `run(states, hparams, data, perms, first_batch) -> (states,
  metrics [num_steps, K, ...])`: member k takes the rows
  `perms[k, (first_batch + i) * batch_size : ...]` at step i, from the one
  device-resident copy of the data. With hparams['example_weights'] [K, N]
  (bagging, `mtl.core.bagging`) a batch carries its rows' weights.
  """

  def run(states, hparams, data, perms, first_batch):
    def one(state, hp, perm, k):
      start = (first_batch + k) * batch_size
      idx = lax.dynamic_slice_in_dim(perm, start, batch_size)
      batch = train_step_lib.gather_rows(data, idx)
      if 'example_weights' in hp:
        batch['weight'] = jnp.take(hp['example_weights'], idx)
      return step(state, batch, hp)

    def body(states, k):
      return jax.vmap(one, in_axes=(0, 0, 0, None))(states, hparams, perms, k)

    return lax.scan(body, states, jnp.arange(num_steps))

  return run


def make_population_eval(eval_run):
  """`run(params [K, ...], data) -> counts [K, ...]` of a scanned eval."""
  return jax.vmap(eval_run, in_axes=(0, None))
