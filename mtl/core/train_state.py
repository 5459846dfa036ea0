"""The one pytree that changes during training.

Nothing callable lives in it: the model, optimizer, weighting method and tasks
are closed over when the step is built, so the state can be checkpointed,
sharded, `eval_shape`d and compared as a whole.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl.core.task_grads import shared_size
from mtl.core.weighting.base import init_state


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
  params = _init_params(_Static(model), init_key, example_features)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    # A copy per leaf: the state is donated, and a method's init may reuse
    # one array for several leaves (donating a buffer twice crashes XLA).
    weighting_state=jax.tree.map(
      jnp.array,
      init_state(weighting, num_tasks, shared_size(model, params)),
    ),
    rng=rng,
  )


class _Static:
  """A model as a jit static argument, equal to another model with the same
  repr. Linen modules compare by their fields, but a vocabulary `Column`
  compares as its int (mtl/core/layers/embedding.py): two models with other
  sequence poolings would be equal; their reprs, which print every Column
  attribute, are not."""

  def __init__(self, model):
    self.model = model
    self._key = repr(model)

  def __eq__(self, other):
    return isinstance(other, _Static) and self._key == other._key

  def __hash__(self):
    return hash(self._key)


@functools.partial(jax.jit, static_argnums=0)
def _init_params(static: _Static, key, example_features):
  """The model's params: one compiled program, not one per op and shape.

  Op by op, a model with many features compiled an init for every table
  shape (cold, on CPU: Ali-CCP's AITM 19.5 s -> 10.0 s, KuaiRand video MMoE
  15.2 -> 9.1 s). Same bits as op by op (mtl/core/layers/initializers.py),
  at the process's own XLA optimisation level (compiled at another, the
  truncated normals differ). A process that inits an equal model again
  reuses the program (tests/core/test_parallel.py 94 -> 68 s; op by op, 72 s).
  """
  return static.model.init(key, example_features, train=False)['params']
