"""The model optimizer, built from `config.optimizer`."""

import optax

from mtl.errors import ConfigError

OPTIMIZERS = {
  'adam': optax.adam,
  'adamw': optax.adamw,
  'adagrad': optax.adagrad,
  'sgd': optax.sgd,
}


SCHEDULES = ('constant', 'cosine')


def make_schedule(
  learning_rate: float, schedule: str, warmup_steps: int, total_steps: int
) -> optax.Schedule:
  """Constant or cosine-decayed learning rate after a linear warm-up."""
  if schedule not in SCHEDULES:
    raise ConfigError(
      f'optimizer.schedule is {schedule!r}, expected one of {SCHEDULES}'
    )
  if not 0 <= warmup_steps < max(total_steps, 1):
    raise ConfigError(
      f'optimizer.warmup_steps is {warmup_steps}, expected 0 <= warmup_steps'
      f" < {total_steps} (the run's total steps)"
    )
  if schedule == 'constant' and not warmup_steps:
    return optax.constant_schedule(learning_rate)
  if schedule == 'constant':
    return optax.join_schedules(
      [
        optax.linear_schedule(0.0, learning_rate, warmup_steps),
        optax.constant_schedule(learning_rate),
      ],
      [warmup_steps],
    )
  if not warmup_steps:
    return optax.cosine_decay_schedule(learning_rate, total_steps)
  return optax.warmup_cosine_decay_schedule(
    0.0,
    learning_rate,
    warmup_steps,
    total_steps,
  )


def make_optimizer(
  name: str = 'adam',
  learning_rate: float = 1e-3,
  weight_decay: float = 0.0,
  grad_clip_norm: float = 0.0,
  schedule: str = 'constant',
  warmup_steps: int = 0,
  *,
  total_steps: int = 1,
) -> optax.GradientTransformation:
  """An optax optimizer; errors name the key, the value and what is allowed.

  Args:
    name: one of OPTIMIZERS.
    learning_rate: > 0; the peak rate when a schedule is used.
    weight_decay: decoupled weight decay, only for 'adamw'.
    grad_clip_norm: clip the global gradient norm to this when > 0.
    schedule: 'constant' or 'cosine' (decay to 0 at `total_steps`).
    warmup_steps: linear warm-up from 0 over this many steps.
    total_steps: the run's number of optimizer steps.
  """
  if name not in OPTIMIZERS:
    raise ConfigError(
      f'optimizer.name {name!r} is not one of {sorted(OPTIMIZERS)}'
    )
  if not learning_rate > 0:
    raise ConfigError(
      f'optimizer.learning_rate is {learning_rate}, expected a number > 0'
    )
  if weight_decay < 0 or (weight_decay and name != 'adamw'):
    raise ConfigError(
      f'optimizer.weight_decay is {weight_decay} with optimizer {name!r}, '
      "expected 0, or >= 0 with 'adamw'"
    )
  if grad_clip_norm < 0:
    raise ConfigError(
      f'optimizer.grad_clip_norm is {grad_clip_norm}, expected >= 0'
    )
  lr = make_schedule(learning_rate, schedule, warmup_steps, total_steps)
  if name == 'adamw':
    tx = optax.adamw(lr, weight_decay=weight_decay)
  else:
    tx = OPTIMIZERS[name](lr)
  if grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx
