"""The model optimizer, built from `config.optimizer`.

`config.optimizer.sparse` chooses embedding tables for sparse updates
(mtl/core/sparse_train.py): `tables`, names of embedding tables (params
embed/<name>: 'table' for the one shared table, else the features' tables),
and `min_rows`, every table of at least that many rows (0: no size rule),
are updated by `method` (a key of sparse.SPARSE_OPTIMIZERS: 'lazy_adam',
'adagrad', 'rowwise_adagrad') at the optimizer's learning rate and schedule;
the rest stays dense (the default: no table is sparse).
"""

import optax

from mtl.core import sparse as sparse_lib
from mtl.core import sparse_train
from mtl.errors import ConfigError

SPARSE_DEFAULTS = {'tables': (), 'min_rows': 0, 'method': 'lazy_adam'}

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
  sparse: dict | None = None,
  *,
  total_steps: int = 1,
  table_shapes: dict | None = None,
):
  """An optax optimizer; errors name the key, the value and what is allowed.

  With `sparse` choosing some of `table_shapes` (module docstring), a
  sparse_train.SparseTables instead: this optimizer (without clipping, which
  the step then does over dense and sparse gradients) for the other params.

  Args:
    name: one of OPTIMIZERS.
    learning_rate: > 0; the peak rate when a schedule is used.
    weight_decay: decoupled weight decay, only for 'adamw'.
    grad_clip_norm: clip the global gradient norm to this when > 0.
    schedule: 'constant' or 'cosine' (decay to 0 at `total_steps`).
    warmup_steps: linear warm-up from 0 over this many steps.
    sparse: {'tables', 'min_rows', 'method'}, see the module docstring.
    total_steps: the run's number of optimizer steps.
    table_shapes: {name: (rows, dim)} of the model's embedding tables
      (embedding.lookups); required for a `sparse` that chooses tables.
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
  names = sparse_tables(sparse, table_shapes)
  if names:
    method = {**SPARSE_DEFAULTS, **(sparse or {})}['method']
    opt = sparse_lib.SPARSE_OPTIMIZERS[method](lr)
    return sparse_train.SparseTables(
      tx, {n: opt for n in names}, float(grad_clip_norm)
    )
  if grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx


def sparse_tables(sparse: dict | None, table_shapes: dict | None) -> tuple:
  """The names of the tables `sparse` chooses; ConfigError on a bad entry."""
  extra = sorted(set(sparse or {}) - set(SPARSE_DEFAULTS))
  if extra:
    raise ConfigError(
      f'optimizer.sparse.{extra[0]} is not a key, expected one of '
      f'{", ".join(SPARSE_DEFAULTS)}'
    )
  s = {**SPARSE_DEFAULTS, **(sparse or {})}
  if s['method'] not in sparse_lib.SPARSE_OPTIMIZERS:
    raise ConfigError(
      f'optimizer.sparse.method is {s["method"]!r}, expected one of '
      f'{", ".join(sparse_lib.SPARSE_OPTIMIZERS)}'
    )
  shapes = table_shapes or {}
  for name in s['tables']:
    if name not in shapes:
      raise ConfigError(
        f'optimizer.sparse.tables has {name!r}, expected names of the '
        f"model's embedding tables: {', '.join(sorted(shapes)) or 'none'}"
      )
  size = s['min_rows']
  return tuple(
    sorted(
      n
      for n, (rows, _) in shapes.items()
      if n in s['tables'] or (size and rows >= size)
    )
  )


def if_finite(tx, max_consecutive: int):
  """optax.apply_if_finite around the (dense) optimizer."""
  if isinstance(tx, sparse_train.SparseTables):
    return tx._replace(dense=optax.apply_if_finite(tx.dense, max_consecutive))
  return optax.apply_if_finite(tx, max_consecutive)
