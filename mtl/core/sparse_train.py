"""Sparse embedding updates in the train step.

Chosen per embedding table (`config.optimizer.sparse`, `optim.
make_optimizer`): a sparse table is updated by a `mtl.core.sparse`
optimizer from the gradients of its looked-up rows, so a step costs the
batch's rows, not the table's; the other params keep the dense optax
optimizer. The "tx" of such a run is a `SparseTables`, which the train step
recognises; its state is data, `{'dense': optax state of the other params,
'sparse': {table: the sparse optimizer's state}}`, so it is checkpointed,
vmapped (populations) and replicated (data parallel) like any opt_state.

The recipe, in `train_step`:

1. split params into the dense params and the sparse tables, which are
   closed over as constants (no gradient of them is ever formed);
2. `zero_rows`: a zero [B, L, d] per gather of a sparse table, passed to the
   model as 'perturbations' (embedding.FeatureEmbedding adds it to the
   gathered rows); the vjp is taken w.r.t. (dense params, perturbations), so
   the perturbations' cotangents are the row gradients;
3. under data parallelism the dense gradients are psummed and the row
   gradients are NOT: `sparse.combine` all-gathers every device's ids and
   row gradients (N*(d+1) numbers, never V*d) and sums duplicates;
4. `apply_updates`: optax on the dense params, the sparse optimizer on the
   touched rows of each sparse table (in place when the state is donated).

Per-task gradients (balancing methods): a method that reads the `embed`
group (ESMM/AITM's shared group, GradNorm's embed/table) gets the sparse
tables' per-task row gradients, combined per task (`task_rows_gram`,
`task_rows_norm`), which are the nonzero rows of the dense per-task
gradients: the Gram matrix and norms are those of the dense gradients.

Differences from the dense optimizer, by design: lazy Adam leaves the rows a
step does not touch and their moments as they are (dense Adam decays every
row's moments and moves untouched rows by their old momentum; module
docstring of mtl/core/sparse.py); adamw's weight decay applies to the dense
params only (sparse rows are not decayed, as TF's LazyAdam and TorchRec's
fused optimizers); with skip_nonfinite, a skipped step restores the params
and sparse rows, while the dense optax state advances as it does for a
non-finite loss with finite gradients. Gradient clipping (grad_clip_norm)
clips by the global norm of the dense gradients and the sparse tables'
combined row gradients: the norm of the full dense gradient.

L2 on the touched embedding rows (`row_l2`, config.optimizer.embedding_l2;
DeepCTR's `l2_reg_embedding`, but per distinct row a step looks up): the
penalty lambda * sum over the distinct rows of the global batch of
||row||^2, its gradient 2 * lambda * row added to those rows' gradients
after the weighting method (it is no task's loss, and not in the reported
losses) and before clipping and the optimizer. A dense table gets it on the
rows of a [V] mask of the all-gathered ids, after the psum; a sparse table
on its combined rows (after `combine`'s all-gather), before its row rule:
with a data axis every device adds the same term, as one device would. A
per-feature table's padding row (id 0) is never penalised; the shared
table's row 0 is a category. A run with `row_l2` and no sparse table is a
SparseTables without tables: the same dense optimizer, its state
{'dense', 'sparse': {}}.

A table sharded by rows over the devices (`SparseTables.sharded`) is a
sparse table whose param and state are each device's block of rows: its
rows are gathered, and its row gradients routed to their owners, by
mtl/core/sharded_tables.py instead of the all-gather of step 3.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl.core import precision, row_l2, sharded_tables, sparse
from mtl.core import task_grads as task_grads_lib
from mtl.core.architectures.base import input_sets
from mtl.core.layers import embedding

EMBED = 'embed'
# The per-task gradient trees' key of the sparse tables' row gradients.
ROWS = 'embed_rows'


class SparseTables(NamedTuple):
  """A run's optimizer when some embedding tables are sparse, or when the
  rows a step touches get an L2 penalty (`row_l2`; no table need be sparse).

  dense: the optax optimizer of every other param (no clipping inside).
  tables: {table name: sparse.SparseOptimizer}, static.
  clip_norm: clip the global gradient norm (dense and sparse) to this; 0 off.
  row_l2: {table name: lambda > 0}, L2 on the rows a step touches (module
    docstring); None or {}: none.
  sharded: names of `tables` sharded by rows over the data axis
    (mtl/core/sharded_tables.py): inside the step their params and state
    are this device's blocks.
  """

  dense: optax.GradientTransformation
  tables: dict
  clip_norm: float = 0.0
  row_l2: dict | None = None
  sharded: tuple = ()

  def init(self, params) -> dict:
    dense, tables = split(params, self.tables)
    return {
      'dense': self.dense.init(dense),
      'sparse': {
        name: _stacked(self.tables[name].init, tables[name])
        for name in sorted(self.tables)
      },
    }


def _stacked(fn, table, *args):
  """fn on a table [V, d], vmapped over a per-task table [T, V, d]."""
  return jax.vmap(fn)(table, *args) if table.ndim == 3 else fn(table, *args)


def split(params, names) -> tuple[Any, dict]:
  """(params without the sparse tables, {name: table})."""
  embed = params[EMBED]
  dense = dict(params)
  dense[EMBED] = {k: v for k, v in embed.items() if k not in names}
  return dense, {k: embed[k] for k in names}


def merge(dense, tables: dict):
  """The inverse of `split`."""
  params = dict(dense)
  params[EMBED] = {**dense[EMBED], **tables}
  return params


def _layout(model, names):
  layout, shapes = embedding.lookups(model.vocab_sizes, model.embed_dim)
  return [lk for lk in layout if lk.table in names], shapes


def zero_rows(model, sparse_ids, names) -> dict:
  """{'embed': {lookup: zeros [(T,) B, L, d]}} for the gathers of `names`.

  sparse_ids: the batch's [B, S] ids. T (+ shared sets) leads for a
  backbone with per-task inputs (per-task tables [T, V, d]).
  """
  layout, shapes = _layout(model, names)
  sets = input_sets(model.backbone)
  lead = () if sets is None else (sets,)
  b = sparse_ids.shape[0]
  return {
    EMBED: {
      lk.name: jnp.zeros(
        lead + (b, lk.stop - lk.start, shapes[lk.table][1]), jnp.float32
      )
      for lk in layout
    }
  }


def _combine(ids, grads, num_rows, axis_name) -> sparse.Rows:
  """sparse.combine of grads [..., N, d] with leading axes (tasks, per-task
  tables) kept: one unique over the ids, the axes side by side in d."""
  lead, (n, d) = grads.shape[:-2], grads.shape[-2:]
  flat = jnp.moveaxis(grads.reshape((-1, n, d)), 0, 1).reshape(n, -1)
  rows = sparse.combine(ids, flat, num_rows=num_rows, axis_name=axis_name)
  g = jnp.moveaxis(rows.grads.reshape(rows.grads.shape[0], -1, d), 1, 0)
  return sparse.Rows(rows.ids, g.reshape(lead + g.shape[1:]))


def _flat_rows(g):
  """[..., B, L, d] -> [..., B * L, d]."""
  return g.reshape(g.shape[:-3] + (-1, g.shape[-1]))


def combine_rows(
  model, sparse_ids, row_grads, names, axis_name=None, sharded=()
) -> dict:
  """{table: Rows} of the distinct ids and summed gradients of each sparse
  table, over all its gathers (and devices, with `axis_name`); a `sharded`
  table's are the rows this device owns, in its block.

  row_grads: the perturbations' cotangents ({'embed': {lookup: [..., B, L,
  d]}}), leading axes (tasks, per-task tables) kept in Rows.grads.
  """
  layout, shapes = _layout(model, names)
  out = {}
  for name in sorted(names):
    mine = [lk for lk in layout if lk.table == name]
    ids = jnp.concatenate([lk.ids(sparse_ids).reshape(-1) for lk in mine])
    grads = jnp.concatenate(
      [_flat_rows(row_grads[EMBED][lk.name]) for lk in mine], axis=-2
    )
    if name in sharded:
      out[name] = sharded_tables.owned_rows(
        ids, grads, shapes[name][0], axis_name
      )
    else:
      out[name] = _combine(ids, grads, shapes[name][0], axis_name)
  return out


def task_rows_gram(
  model, sparse_ids, task_rows, names, axis_name=None, sharded=()
):
  """[T, T] Gram matrix of the sparse tables' per-task gradients [T, ...]."""
  rows = combine_rows(model, sparse_ids, task_rows, names, axis_name, sharded)
  total = 0.0
  for name, r in rows.items():
    f = r.grads.reshape(r.grads.shape[0], -1)
    total = total + sharded_tables.psum_if(f @ f.T, name in sharded, axis_name)
  return total


def task_rows_squares(
  model, sparse_ids, task_rows, names, axis_name=None, sharded=()
):
  """[K] squared norms of the tables' gradients [K, ...], summed over
  `names` (a split table's over its owners, psummed)."""
  rows = combine_rows(model, sparse_ids, task_rows, names, axis_name, sharded)
  return sum(
    sharded_tables.psum_if(
      jnp.sum(jnp.square(r.grads.reshape(r.grads.shape[0], -1)), axis=1),
      name in sharded,
      axis_name,
    )
    for name, r in rows.items()
  )


def task_rows_norm(
  model, sparse_ids, task_rows, name, axis_name=None, sharded=()
):
  """[T] norms of one sparse table's per-task gradients."""
  return jnp.sqrt(
    task_rows_squares(model, sparse_ids, task_rows, (name,), axis_name, sharded)
  )


def differentiable(part, model, params, sparse_ids, axis_name=None):
  """(primal, variables): what the step differentiates, and the model's
  variables from it. Without sparse tables: params, {'params': p}. With:
  (dense params, zero rows), the tables closed over; the sharded tables'
  rows gathered from every device's block (sharded_tables.gathered).
  bfloat16 tables are differentiated as float32 (precision.float32_view)."""
  if part is None:
    return precision.float32_view(params), lambda p: {'params': p}
  dense, tables = split(params, part.tables)
  rows = zero_rows(model, sparse_ids, part.tables)
  dense = precision.float32_view(dense)
  whole = {k: v for k, v in tables.items() if k not in part.sharded}
  given = {}
  if part.sharded:
    given = {
      sharded_tables.GATHERED: {
        EMBED: sharded_tables.gathered(
          model, params, sparse_ids, part.sharded, axis_name
        )
      }
    }
  return (dense, rows), lambda p: {
    'params': merge(p[0], whole),
    'perturbations': p[1],
    **given,
  }


def one_tree(vjp_fn):
  """The vjp of (dense, rows) as one params-like tree, the rows at ROWS."""

  def fn(w):
    ((dense, rows),) = vjp_fn(w)
    return ({**dense, ROWS: rows},)

  return fn


def pop_rows(grads, part):
  """(grads without ROWS, the row gradients or None)."""
  if part is None or ROWS not in grads:
    return grads, None
  grads = dict(grads)
  return grads, grads.pop(ROWS)


def task_norms(per_task, path, model, sparse_ids, task_rows, part, axis_name):
  """[T] per-task gradient norms at `path` (GradNorm), sparse tables too."""
  if part is not None and path[0] == EMBED and path[1] in part.tables:
    return task_rows_norm(
      model, sparse_ids, task_rows, path[1], axis_name, part.sharded
    )
  return task_grads_lib.norms_at(per_task, path)


def task_gram(per_task, shared, model, sparse_ids, task_rows, part, axis_name):
  """[T, T] Gram matrix of the shared group's per-task gradients, its
  sparse tables' (combined) rows included."""
  group = per_task[shared]
  total = task_grads_lib.gram(group) if jax.tree.leaves(group) else 0.0
  if task_rows is not None and shared == EMBED:
    total = total + task_rows_gram(
      model, sparse_ids, task_rows, part.tables, axis_name, part.sharded
    )
  return total


def _sum_squares(tree):
  return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def apply_updates(
  part: SparseTables,
  model,
  params,
  opt_state,
  dense_grads,
  row_grads,
  sparse_ids,
  *,
  step,
  axis_name=None,
  scale=None,
  losses=None,
  skip_nonfinite: bool = False,
):
  """One optimizer step: optax on the dense params, sparse on the tables.

  dense_grads: of the dense params (psummed); row_grads: the perturbations'
  cotangents (this device's, not psummed). scale: a member's lr scale.
  part.row_l2: L2 on the touched rows, added first (module docstring).
  With skip_nonfinite (part.dense wrapped in optax.apply_if_finite), a step
  whose losses, dense or row gradients are not finite changes no param.

  Returns (params, opt_state, finite).
  """
  dense, tables = split(params, part.tables)
  sharded = part.sharded
  rows = combine_rows(
    model, sparse_ids, row_grads, part.tables, axis_name, sharded
  )
  if part.row_l2:
    dense_grads, rows = row_l2.add_row_l2(
      part.row_l2,
      model,
      params,
      dense_grads,
      rows,
      sparse_ids,
      axis_name,
      sharded,
    )
  owned = lambda k, x: sharded_tables.psum_if(x, k in sharded, axis_name)  # noqa: E731
  if part.clip_norm:
    # optax.clip_by_global_norm over the dense gradient of every param.
    norm = jnp.sqrt(
      _sum_squares(dense_grads)
      + sum(owned(k, _sum_squares(r.grads)) for k, r in rows.items())
    )
    clip = lambda g: jnp.where(  # noqa: E731
      norm < part.clip_norm, g, (g / norm.astype(g.dtype)) * part.clip_norm
    )
    dense_grads = jax.tree.map(clip, dense_grads)
    rows = {k: r._replace(grads=clip(r.grads)) for k, r in rows.items()}
  updates, dense_state = part.dense.update(
    dense_grads, opt_state['dense'], dense
  )
  if scale is not None:
    updates = jax.tree.map(lambda u: u * scale, updates)
  new_dense = optax.apply_updates(dense, updates)
  finite = True
  if skip_nonfinite:
    finite = dense_state.last_finite & jnp.isfinite(losses).all()
    for k, r in rows.items():
      bad = (~jnp.isfinite(r.grads)).sum(dtype=jnp.int32)
      finite = finite & (owned(k, bad) == 0)
    new_dense = jax.tree.map(
      lambda new, old: jnp.where(finite, new, old), new_dense, dense
    )
  new_tables, new_sparse = {}, {}
  for name, opt in sorted(part.tables.items()):
    ids = rows[name].ids

    def one(table, state, grads, opt=opt, ids=ids):
      return opt.update(
        table,
        state,
        sparse.Rows(ids, grads),
        step=step,
        scale=scale,
        apply_if=finite,
      )

    table, state = tables[name], opt_state['sparse'][name]
    fn = jax.vmap(one) if table.ndim == 3 else one
    new_tables[name], new_sparse[name] = fn(table, state, rows[name].grads)
  new_opt_state = {'dense': dense_state, 'sparse': new_sparse}
  return merge(new_dense, new_tables), new_opt_state, finite
