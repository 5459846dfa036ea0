"""Sparse embedding updates: a step's cost follows the batch's rows, not V.

Dense training differentiates the loss with respect to a whole table [V, d]:
the gradient of `jnp.take(table, ids)` is a dense [V, d] scatter-add, and a
dense optimizer then reads and writes every row and every row's state. Here
the step differentiates with respect to the gathered rows [N, d] instead
(`lookup`), and `SparseOptimizer.apply` writes the touched rows only:

  rows = lookup(table, ids)                        # [..., d], the model's
  row_grads = d loss / d rows                      # [..., d]
  table, state = opt.apply(table, state, ids, row_grads, step=step)

`apply` = `combine` (distinct ids, their summed gradients) + `update` (gather
the touched rows of the table and of each state leaf, the optimizer's row
rule, scatter them back). Every array it makes is [N, ...] or [N] with
N = ids.size (times the device count with `axis_name`); with the table and
state donated (`donate_argnums`), XLA scatters into them in place, so the step
does not touch the other V - N rows at all.

Duplicate ids are combined first: the gradient of the table is the SUM of the
gradients of a row's occurrences (the scatter-add), and the optimizers are not
linear in the gradient (Adagrad adds g^2, Adam divides by sqrt(v)), so one
update with the sum is the dense update while one update per occurrence is
not (and Adam would decay the row's moments once per occurrence); a scatter
of duplicates would also keep an unspecified one of them.

The optimizers (SPARSE_OPTIMIZERS; each docstring gives its rule and its
source): `adagrad` and `ftrl` leave a row without gradient as it is, so on
the touched rows they ARE the dense optimizers; `rowwise_adagrad` keeps one
accumulator per row; `lazy_adam` steps the touched rows' moments only;
`adam` steps every row (dense Adam, for tables split by rows).

Data parallel (`axis_name`): each device passes its shard's ids and row
gradients (of its share of the global loss, as `train_step` writes it);
`combine` all-gathers both across the axis before the segment sum, so every
device makes the same update, equal to the one-device update of the whole
batch. That moves N*(d+1) numbers per device, never V*d.

Ids outside [0, V) update nothing (the dense gradient of `jnp.take` drops
them too); `lookup` is `jnp.take`, the embedding layer's gather.

A bfloat16 table (config.embedding.dtype; mtl/core/precision.py) keeps
float32 state; its touched rows are read as float32, the rule runs in
float32 and each new row is rounded to the nearest bfloat16 once.

Configuration: `config.optimizer.sparse = {'tables': names,
'min_rows': N, 'method': name, 'ftrl': {beta, l1, l2}}` chooses the sparse
tables (named ones, and every table of >= N rows; 0: none by size) and
their optimizer, one of `SPARSE_OPTIMIZERS`, at the optimizer's learning
rate and schedule (mtl/core/optim.py); the train step integrates them by
the perturb recipe (mtl/core/sparse_train.py). Dense stays the default.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mtl.core import ftrl as ftrl_lib


class Rows(NamedTuple):
  """A batch's distinct ids and the summed gradient of each.

  ids: [N] int32, ascending; entries >= the table's rows are padding (distinct
    too, so scatters may assume unique indices) and update nothing.
  grads: [N, d], 0 on padding.
  """

  ids: jax.Array
  grads: jax.Array


def lookup(table: jax.Array, ids: jax.Array) -> jax.Array:
  """table [V, d], ids [...] int -> rows [..., d] (the layer's `jnp.take`)."""
  return jnp.take(table, ids, axis=0)


def combine(
  ids: jax.Array,
  row_grads: jax.Array,
  *,
  num_rows: int,
  axis_name: str | None = None,
) -> Rows:
  """Distinct ids and their summed row gradients (all devices' with an axis).

  Args:
    ids: [...] int, the ids looked up (this device's, with `axis_name`).
    row_grads: [..., d], the gradient of each looked-up row.
    num_rows: V, the table's rows; ids outside [0, V) are dropped.
    axis_name: a pmap / shard_map axis: gather every device's ids and
      gradients first, so the result is the whole batch's on every device.

  Returns:
    Rows with N = ids.size (times the axis size) entries.
  """
  ids = jnp.asarray(ids, jnp.int32).reshape(-1)
  grads = row_grads.reshape(ids.shape[0], row_grads.shape[-1])
  if axis_name is not None:
    ids = lax.all_gather(ids, axis_name, tiled=True)
    grads = lax.all_gather(grads, axis_name, tiled=True)
  n = ids.shape[0]
  ids = jnp.where((ids >= 0) & (ids < num_rows), ids, num_rows)
  uids, inverse = jnp.unique(
    ids, size=n, fill_value=num_rows, return_inverse=True
  )
  summed = jax.ops.segment_sum(grads, inverse.reshape(-1), num_segments=n)
  pad = uids >= num_rows
  # Padding (and dropped ids) become distinct out-of-range ids, ascending.
  uids = jnp.where(pad, num_rows + jnp.arange(n, dtype=jnp.int32), uids)
  summed = jnp.where(pad[:, None], jnp.zeros_like(summed), summed)
  return Rows(uids, summed)


def _gather(x: jax.Array, ids: jax.Array) -> jax.Array:
  return x.at[ids].get(
    mode='fill', fill_value=0, indices_are_sorted=True, unique_indices=True
  )


def _scatter(x: jax.Array, ids: jax.Array, values: jax.Array) -> jax.Array:
  return x.at[ids].set(
    values, mode='drop', indices_are_sorted=True, unique_indices=True
  )


# rule(rows [N, d], state_rows, grads [N, d], step) -> (updates, state_rows)
Rule = Callable[[jax.Array, Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


class SparseOptimizer(NamedTuple):
  """An optimizer of one table that reads and writes its touched rows only.

  init(table [V, d]) -> state: a pytree whose leaves all have V rows first.
  rule: the dense optimizer's step on a subset of rows (see `Rule`); the
    updates are added to the rows, as `optax.apply_updates` adds them.
  """

  init: Callable[[jax.Array], Any]
  rule: Rule
  # The rule runs on every row of the table (a dense optimizer: `adam`),
  # the rows' gradients scattered into zeros; its cost is the table's.
  dense: bool = False

  def update(
    self,
    table: jax.Array,
    state: Any,
    rows: Rows,
    *,
    step: jax.Array,
    scale: jax.Array | float | None = None,
    apply_if: jax.Array | bool = True,
  ) -> tuple[jax.Array, Any]:
    """One step on the rows of `combine`; see `apply`."""
    if self.dense:  # Every row; the rows' gradients scattered into zeros.
      old, old_state = table, state
      grads = jnp.zeros(table.shape, _state_dtype(table))
      grads = _scatter(grads, rows.ids, rows.grads)
    else:
      old = _gather(table, rows.ids)
      old_state = jax.tree.map(lambda x: _gather(x, rows.ids), state)
      grads = rows.grads
    # A bfloat16 table's rows in float32 (exact); the new rows rounded once.
    work = old.astype(_state_dtype(old))
    updates, new_state = self.rule(work, old_state, grads, step)
    if scale is not None:
      updates = updates * jnp.asarray(scale, updates.dtype)
    new = jnp.asarray(work + updates).astype(old.dtype)
    if apply_if is not True:
      new, new_state = jax.tree.map(
        lambda a, b: jnp.where(apply_if, a, b),
        (new, new_state),
        (old, old_state),
      )
    if self.dense:
      return new, new_state
    table = _scatter(table, rows.ids, new)
    state = jax.tree.map(
      lambda x, v: _scatter(x, rows.ids, v), state, new_state
    )
    return table, state

  def apply(
    self,
    table: jax.Array,
    state: Any,
    ids: jax.Array,
    row_grads: jax.Array,
    *,
    step: jax.Array,
    axis_name: str | None = None,
    scale: jax.Array | float | None = None,
    apply_if: jax.Array | bool = True,
  ) -> tuple[jax.Array, Any]:
    """One optimizer step of `table` from the gradients of looked-up rows.

    Args:
      table: [V, d] (donate it, and `state`, for an in-place update).
      state: this optimizer's state of `table` (`init`).
      ids: [...] int, the ids looked up this step.
      row_grads: [..., d], the loss's gradient with respect to each row.
      step: the optimizer steps taken before this one (TrainState.step):
        the learning rate schedule's argument; Adam's bias correction uses
        step + 1.
      axis_name: combine every device's ids and gradients over this axis.
      scale: multiplies the updates (a population member's lr scale).
      apply_if: False leaves table and state as they were (a skipped
        non-finite step), still at the cost of the touched rows only.

    Returns:
      (table, state) with the touched rows updated, the others as they were.
    """
    rows = combine(ids, row_grads, num_rows=table.shape[0], axis_name=axis_name)
    return self.update(
      table, state, rows, step=step, scale=scale, apply_if=apply_if
    )


def _state_dtype(table: jax.Array):
  """The dtype of a table's optimizer state and row arithmetic: float32 for
  a bfloat16 table (config.embedding.dtype), else the table's."""
  return jnp.promote_types(table.dtype, jnp.float32)


def _learning_rate(learning_rate: optax.ScalarOrSchedule, step, dtype):
  lr = learning_rate(step) if callable(learning_rate) else learning_rate
  return jnp.asarray(-1 * lr, dtype)


def _inv_sqrt(acc: jax.Array, eps: float) -> jax.Array:
  # optax.scale_by_rss's guard: no step while nothing has accumulated.
  return jnp.where(acc > 0, lax.rsqrt(acc + eps), 0.0)


def adagrad(
  learning_rate: optax.ScalarOrSchedule,
  initial_accumulator_value: float = 0.1,
  eps: float = 1e-7,
) -> SparseOptimizer:
  """Element-wise Adagrad (Duchi et al. 2011), `optax.adagrad`'s rule.

  State: the sum of squared gradients [V, d].
  """

  def init(table):
    return {
      'acc': jnp.full_like(
        table, initial_accumulator_value, _state_dtype(table)
      )
    }

  def rule(rows, state, g, step):
    acc = g * g + state['acc']
    updates = _learning_rate(learning_rate, step, g.dtype) * (
      _inv_sqrt(acc, eps) * g
    )
    return updates, {'acc': acc}

  return SparseOptimizer(init, rule)


def rowwise_adagrad(
  learning_rate: optax.ScalarOrSchedule,
  initial_accumulator_value: float = 0.1,
  eps: float = 1e-7,
) -> SparseOptimizer:
  """Row-wise Adagrad: one accumulator per row, acc += mean_d(g^2).

  FBGEMM's ROWWISE_ADAGRAD behind TorchRec's EXACT_ROWWISE_ADAGRAD
  (fbgemm_gpu/codegen/genscript/optimizers.py) and MXNet's GroupAdaGrad,
  with optax.adagrad's hyper-parameters (initial_accumulator_value 0.1, eps
  inside the root: with d = 1 it is `optax.adagrad`; FBGEMM starts at 0 and
  adds eps outside the root). State: [V].
  """

  def init(table):
    return {
      'acc': jnp.full(
        table.shape[:1], initial_accumulator_value, _state_dtype(table)
      )
    }

  def rule(rows, state, g, step):
    acc = jnp.mean(g * g, axis=-1) + state['acc']
    updates = _learning_rate(learning_rate, step, g.dtype) * (
      _inv_sqrt(acc, eps)[:, None] * g
    )
    return updates, {'acc': acc}

  return SparseOptimizer(init, rule)


def lazy_adam(
  learning_rate: optax.ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  eps_root: float = 0.0,
) -> SparseOptimizer:
  """Lazy Adam: `optax.adam`'s rule on the touched rows' moments only.

  Kingma & Ba 2015, Algorithm 1, made lazy as TensorFlow's LazyAdam: the
  moments of rows a step does not touch neither decay nor move their row
  (dense Adam decays them and still moves the row); bias correction by the
  global step, as TF's `iterations`; eps added to sqrt(v_hat), as optax
  (TF adds its "epsilon hat" to sqrt(v)). State: m and v, [V, d] each.
  """

  def init(table):
    dtype = _state_dtype(table)
    return {
      'mu': jnp.zeros_like(table, dtype),
      'nu': jnp.zeros_like(table, dtype),
    }

  def rule(rows, state, g, step):
    count = jnp.asarray(step, jnp.int32) + 1
    mu = (1 - b1) * g + b1 * state['mu']
    nu = (1 - b2) * (g**2) + b2 * state['nu']
    mu_hat = mu / (1 - b1**count).astype(mu.dtype)
    nu_hat = nu / (1 - b2**count).astype(nu.dtype)
    updates = _learning_rate(learning_rate, step, g.dtype) * (
      mu_hat / (jnp.sqrt(nu_hat + eps_root) + eps)
    )
    return updates, {'mu': mu, 'nu': nu}

  return SparseOptimizer(init, rule)


def adam(
  learning_rate: optax.ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  eps_root: float = 0.0,
) -> SparseOptimizer:
  """Dense Adam (Kingma & Ba 2015, Algorithm 1): `optax.adam`'s step on
  every row, a row without gradient taking g = 0 (its moments decay and it
  still moves by lr m_hat / (sqrt(v_hat) + eps)).

  For a table split by rows over the devices (mtl/core/sharded_tables.py):
  each device steps its own block, so a split table trains as the
  replicated dense run does, at 1/N of its memory on each device. Its cost
  is the table's rows, not the batch's. State: m and v, [V, d] each.
  """
  lazy = lazy_adam(learning_rate, b1, b2, eps, eps_root)
  return lazy._replace(dense=True)  # The same rule and state, every row.


def ftrl(
  learning_rate: float,
  beta: float = 1.0,
  l1: float = 0.0,
  l2: float = 0.0,
) -> SparseOptimizer:
  """FTRL-Proximal (McMahan et al. 2013, Algorithm 1) on touched rows.

  `ftrl.ftrl_coordinates` on the gathered rows, z and n; learning_rate is
  alpha, a constant (mtl/core/ftrl.py). State: z and n, [V, d] each.
  """
  ftrl_lib.ftrl(learning_rate, beta, l1, l2)  # Checks the values.
  hyper = dict(alpha=learning_rate, beta=beta, l1=l1, l2=l2)

  def init(table):
    dtype = _state_dtype(table)
    return {
      'z': jnp.zeros_like(table, dtype),
      'n': jnp.zeros_like(table, dtype),
    }

  def rule(rows, state, g, step):
    del step  # alpha is constant.
    w, z, n = ftrl_lib.ftrl_coordinates(
      rows, state['z'], state['n'], g, **hyper
    )
    return w - rows, {'z': z, 'n': n}

  return SparseOptimizer(init, rule)


SPARSE_OPTIMIZERS = {
  'adam': adam,
  'adagrad': adagrad,
  'rowwise_adagrad': rowwise_adagrad,
  'lazy_adam': lazy_adam,
  'ftrl': ftrl,
}
