"""The model optimizer, built from `config.optimizer`."""

import optax

OPTIMIZERS = {
  'adam': optax.adam,
  'adamw': optax.adamw,
  'adagrad': optax.adagrad,
  'sgd': optax.sgd,
}


def make_optimizer(
  name: str = 'adam',
  learning_rate: float = 1e-3,
  weight_decay: float = 0.0,
  grad_clip_norm: float = 0.0,
) -> optax.GradientTransformation:
  """An optax optimizer; errors name the key, the value and what is allowed.

  Args:
    name: one of OPTIMIZERS.
    learning_rate: > 0.
    weight_decay: decoupled weight decay, only for 'adamw'.
    grad_clip_norm: clip the global gradient norm to this when > 0.
  """
  if name not in OPTIMIZERS:
    raise ValueError(
      f'optimizer.name {name!r} is not one of {sorted(OPTIMIZERS)}'
    )
  if not learning_rate > 0:
    raise ValueError(
      f'optimizer.learning_rate is {learning_rate}, expected a number > 0'
    )
  if weight_decay < 0 or (weight_decay and name != 'adamw'):
    raise ValueError(
      f'optimizer.weight_decay is {weight_decay} with optimizer {name!r}, '
      "expected 0, or >= 0 with 'adamw'"
    )
  if grad_clip_norm < 0:
    raise ValueError(
      f'optimizer.grad_clip_norm is {grad_clip_norm}, expected >= 0'
    )
  if name == 'adamw':
    tx = optax.adamw(learning_rate, weight_decay=weight_decay)
  else:
    tx = OPTIMIZERS[name](learning_rate)
  if grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx
