"""The one pytree that changes during training.

Nothing callable lives in it: the model, optimizer, weighting method and tasks
are closed over when the step is built, so the state can be checkpointed,
sharded, `eval_shape`d and compared as a whole.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class TrainState(NamedTuple):
  step: jnp.ndarray  # int32 scalar: optimizer steps taken
  params: Any
  opt_state: Any
  weighting_state: Any
  rng: jnp.ndarray  # typed key; per-step randomness is fold_in(rng, step)


def init_train_state(
  model, tx, weighting, example_features, *, num_tasks: int, key
) -> TrainState:
  """Initialises params from `key` and every state that hangs off them."""
  init_key, rng = jax.random.split(key)
  # One compiled program, not one per op and shape: op by op, a model with
  # many features compiled an init for every table shape (cold, on CPU:
  # Ali-CCP's AITM 19.5 s -> 10.0 s, KuaiRand video MMoE 15.2 -> 9.1 s).
  # Same bits as op by op (mtl/core/layers/initializers.py), at the
  # process's own XLA optimisation level (compiled at another, the
  # truncated normals differ).
  init = jax.jit(functools.partial(model.init, train=False))
  params = init(init_key, example_features)['params']
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    # A copy per leaf: the state is donated, and a method's init may reuse
    # one array for several leaves (donating a buffer twice crashes XLA).
    weighting_state=jax.tree.map(jnp.array, weighting.init(num_tasks)),
    rng=rng,
  )
