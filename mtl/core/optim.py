"""The model optimizer, built from `config.optimizer`.

`config.optimizer.sparse` chooses embedding tables for sparse updates
(mtl/core/sparse_train.py): `tables`, names of embedding tables (params
embed/<name>: 'table' for the one shared table, else the features' tables),
and `min_rows`, every table of at least that many rows (0: no size rule),
are updated by `method` (a key of sparse.SPARSE_OPTIMIZERS: 'lazy_adam',
'adagrad', 'rowwise_adagrad', 'ftrl', or 'adam', dense Adam on every row
for tables split by rows) at the optimizer's learning rate and
schedule (FTRL: the learning rate alone, as alpha, with `ftrl`'s beta, l1
and l2; mtl/core/ftrl.py); the rest stays dense (the default: no table is
sparse).

`config.optimizer.wide` gives the Wide & Deep wide part (the top-level
params subtree `wide`, if the model has one) its own optimizer: name
'same' (the default: the wide params go through the main optimizer, as
every param does), 'ftrl' (FTRL-Proximal, McMahan et al. 2013, with
learning_rate as alpha, beta, l1, l2) or 'adagrad' (optax.adagrad at
learning_rate, l2 as l2 * w added to the gradient, the gradient of
(l2 / 2) ||w||^2 as FTRL's lambda2; l1 must be 0; beta unused). Its rate is
constant (no schedule, no warm-up). `optax.multi_transform` sends `wide`
to it and every other param to the main optimizer; with sparse tables it
is the SparseTables' dense optimizer. grad_clip_norm clips the global norm
of ALL gradients, the wide part's included, before either optimizer;
skip_nonfinite (`if_finite`) wraps both. A population's lr_scale multiplies
the wide updates too, which for FTRL is not FTRL at a scaled alpha.

`config.optimizer.embedding_l2` (lambda, 0: off) adds lambda * ||row||^2 of
every distinct embedding row a step touches (mtl/core/sparse_train.py:
sparse and dense tables alike; not in the reported losses);
`embedding_l2_tables`, ((table, lambda), ...), overrides it per table.
"""

import math

import jax
import optax

from mtl.core import ftrl as ftrl_lib
from mtl.core import sparse as sparse_lib
from mtl.core import sparse_train
from mtl.errors import ConfigError

SPARSE_DEFAULTS = {
  'tables': (),
  'min_rows': 0,
  'method': 'lazy_adam',
  # The 'ftrl' method's hyper-parameters besides alpha (mtl/core/ftrl.py).
  'ftrl': {'beta': 1.0, 'l1': 0.0, 'l2': 0.0},
}
WIDE = 'wide'  # The wide part's top-level params key.
WIDE_DEFAULTS = {
  'name': 'same',
  'learning_rate': 0.05,
  'l1': 0.0,
  'l2': 0.0,
  'beta': 1.0,
}
WIDE_OPTIMIZERS = ('same', 'ftrl', 'adagrad')

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
  wide: dict | None = None,
  embedding_l2: float = 0.0,
  embedding_l2_tables: tuple = (),
  *,
  total_steps: int = 1,
  table_shapes: dict | None = None,
):
  """An optax optimizer; errors name the key, the value and what is allowed.

  With `sparse` choosing some of `table_shapes` (module docstring), or an
  embedding L2, a sparse_train.SparseTables instead: this optimizer (without
  clipping, which the step then does over dense and sparse gradients) for
  the other params.

  Args:
    name: one of OPTIMIZERS.
    learning_rate: > 0; the peak rate when a schedule is used.
    weight_decay: decoupled weight decay, only for 'adamw'.
    grad_clip_norm: clip the global gradient norm to this when > 0.
    schedule: 'constant' or 'cosine' (decay to 0 at `total_steps`).
    warmup_steps: linear warm-up from 0 over this many steps.
    sparse: {'tables', 'min_rows', 'method', 'ftrl'}, see the module
      docstring.
    wide: {'name', 'learning_rate', 'l1', 'l2', 'beta'}: the wide part's
      optimizer (module docstring); None or name 'same': the main one.
    embedding_l2: L2 on the touched rows of every embedding table; 0 off.
    embedding_l2_tables: ((table, lambda), ...), per-table overrides.
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
  tx = with_wide(tx, wide)
  names = sparse_tables(sparse, table_shapes)
  row_l2 = embedding_l2_of(embedding_l2, embedding_l2_tables, table_shapes)
  if names or row_l2:
    s = {**SPARSE_DEFAULTS, **(sparse or {})}
    if s['method'] == 'ftrl':
      # FTRL's alpha is constant (mtl/core/ftrl.py): the rate, no schedule.
      opt = sparse_lib.ftrl(learning_rate, **_sparse_ftrl(s['ftrl']))
    else:
      opt = sparse_lib.SPARSE_OPTIMIZERS[s['method']](lr)
    return sparse_train.SparseTables(
      tx, {n: opt for n in names}, float(grad_clip_norm), row_l2 or None
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
  _sparse_ftrl(s['ftrl'])
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


def _sparse_ftrl(values: dict | None) -> dict:
  """optimizer.sparse.ftrl with its defaults; ConfigError on a bad one."""
  defaults = SPARSE_DEFAULTS['ftrl']
  extra = sorted(set(values or {}) - set(defaults))
  if extra:
    raise ConfigError(
      f'optimizer.sparse.ftrl.{extra[0]} is not a key, expected one of '
      f'{", ".join(defaults)}'
    )
  out = {**defaults, **(values or {})}
  for key, v in out.items():
    if not v >= 0:
      raise ConfigError(
        f'optimizer.sparse.ftrl.{key} is {v}, expected a number >= 0'
      )
  return out


def wide_optimizer(wide: dict | None):
  """The wide part's optax optimizer, or None for 'same'; ConfigError on a
  bad entry (module docstring)."""
  extra = sorted(set(wide or {}) - set(WIDE_DEFAULTS))
  if extra:
    raise ConfigError(
      f'optimizer.wide.{extra[0]} is not a key, expected one of '
      f'{", ".join(WIDE_DEFAULTS)}'
    )
  w = {**WIDE_DEFAULTS, **(wide or {})}
  if w['name'] not in WIDE_OPTIMIZERS:
    raise ConfigError(
      f'optimizer.wide.name is {w["name"]!r}, expected one of '
      f'{", ".join(WIDE_OPTIMIZERS)}'
    )
  if not w['learning_rate'] > 0:
    raise ConfigError(
      f'optimizer.wide.learning_rate is {w["learning_rate"]}, expected a '
      'number > 0'
    )
  for key in ('l1', 'l2', 'beta'):
    if not w[key] >= 0:
      raise ConfigError(
        f'optimizer.wide.{key} is {w[key]}, expected a number >= 0'
      )
  if w['name'] == 'adagrad' and w['l1']:
    raise ConfigError(
      f"optimizer.wide.l1 is {w['l1']} with optimizer.wide.name 'adagrad', "
      "expected 0, or > 0 with 'ftrl'"
    )
  if w['name'] == 'same':
    return None
  if w['name'] == 'ftrl':
    return ftrl_lib.ftrl(w['learning_rate'], w['beta'], w['l1'], w['l2'])
  ada = optax.adagrad(w['learning_rate'])
  if w['l2']:
    return optax.chain(optax.add_decayed_weights(w['l2']), ada)
  return ada


def with_wide(tx, wide: dict | None):
  """`tx` for every param but the top-level `wide`, which gets the wide
  optimizer (optax.multi_transform); `tx` itself for 'same'."""
  wide_tx = wide_optimizer(wide)
  if wide_tx is None:
    return tx

  def labels(params):
    return {
      k: jax.tree.map(lambda _, k=k: WIDE if k == WIDE else 'main', v)
      for k, v in params.items()
    }

  return optax.multi_transform({'main': tx, WIDE: wide_tx}, labels)


def embedding_l2_of(
  embedding_l2: float, per_table: tuple, table_shapes: dict | None
) -> dict:
  """{table: lambda > 0} of the embedding tables; ConfigError on a bad one."""
  if not embedding_l2 >= 0:
    raise ConfigError(
      f'optimizer.embedding_l2 is {embedding_l2}, expected a number >= 0'
    )
  if not isinstance(per_table, tuple | list):
    raise ConfigError(
      f'optimizer.embedding_l2_tables is {per_table!r}, expected a tuple of '
      '(table name, lambda >= 0) pairs'
    )
  shapes = table_shapes or {}
  out = {name: float(embedding_l2) for name in shapes}
  for i, entry in enumerate(per_table or ()):
    key = f'optimizer.embedding_l2_tables[{i}]'
    ok = isinstance(entry, tuple | list) and len(entry) == 2
    if not ok or not isinstance(entry[0], str):
      raise ConfigError(
        f'{key} is {entry!r}, expected a pair (table name, lambda >= 0)'
      )
    name, lam = entry
    if isinstance(lam, bool) or not isinstance(lam, int | float):
      raise ConfigError(f'{key} is {entry!r}, expected a lambda >= 0')
    if not (lam >= 0 and math.isfinite(lam)):
      raise ConfigError(f'{key} is {entry!r}, expected a lambda >= 0')
    if table_shapes is not None and name not in shapes:
      raise ConfigError(
        f"{key} names {name!r}, expected one of the model's embedding "
        f'tables: {", ".join(sorted(shapes)) or "none"}'
      )
    out[name] = float(lam)
  return {k: v for k, v in sorted(out.items()) if v > 0}


def if_finite(tx, max_consecutive: int):
  """optax.apply_if_finite around the (dense) optimizer."""
  if isinstance(tx, sparse_train.SparseTables):
    return tx._replace(dense=optax.apply_if_finite(tx.dense, max_consecutive))
  return optax.apply_if_finite(tx, max_consecutive)
