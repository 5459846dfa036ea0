"""Embedding tables sharded by rows in the train and eval steps.

A sharded table (`SparseTables.sharded`, chosen by the run's `sharding`
config) is split over the data axis of the mesh in the layout of
mtl/core/sharded_embedding.py: row i of a table of V rows lives on device
i mod N, at row i // N of that device's block [R, d], R = ceil(V / N). Its
sparse optimizer state is split the same way (every state leaf has V rows
first, mtl/core/sparse.py). Outside the step the table is the global array
of the blocks side by side, [N * R, d], split on its first axis; inside the
step (`jax.shard_map` over the axis) each device sees its block only. No
device ever holds the whole table or its state.

The step, for the sharded tables (everything else as in sparse_train):

1. `gathered`: each lookup of a sharded table gets its rows through
   `sharded_embedding.lookup` (de-duplicate, `all_to_all` to the owners,
   gather, `all_to_all` back), and the model takes them as the variable
   'gathered' (mtl/core/layers/embedding.py) instead of gathering itself;
   the zero perturbations on top give the row gradients, as for any sparse
   table;
2. `owned_rows`: the row gradients go the reverse route to their owners
   (`sharded_embedding.touched_rows`), each owner summing duplicates over
   all devices: a `sparse.Rows` of its local rows;
3. each owner applies the sparse optimizer to its block and its state.

Quantities over all rows (the global gradient norm for clipping, the
per-task Gram matrix and norms the balancing methods read, the finite
check) are each device's sum over the rows it owns, `psum`med: every row is
owned once, so the sums are those of the replicated run, up to the order of
the float32 additions.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from mtl.core import sharded_embedding, sparse
from mtl.core.layers import embedding

GATHERED = 'gathered'


def _lookups(model, names):
  layout, shapes = embedding.lookups(model.vocab_sizes, model.embed_dim)
  return [lk for lk in layout if lk.table in names], shapes


def gathered(model, params, sparse_ids, names, axis_name) -> dict:
  """{lookup name: rows [B, L, d]} of every lookup of the sharded tables
  `names`, from this device's blocks (params['embed'][name], [R, d])."""
  layout, shapes = _lookups(model, names)
  out = {}
  for lk in layout:
    rows = sharded_embedding.lookup(
      params['embed'][lk.table],
      lk.ids(sparse_ids),
      axis_name,
      num_rows=shapes[lk.table][0],
    )
    out[lk.name] = lax.stop_gradient(rows)
  return out


def variables(model, params, sparse_ids, names, axis_name) -> dict:
  """The model's variables with the sharded tables `names` given as their
  gathered rows: {'params': params without them, 'gathered': rows}."""
  if not names:
    return {'params': params}
  rows = gathered(model, params, sparse_ids, names, axis_name)
  embed = {k: v for k, v in params['embed'].items() if k not in names}
  return {'params': {**params, 'embed': embed}, GATHERED: {'embed': rows}}


def owned_rows(ids, grads, num_rows: int, axis_name: str) -> sparse.Rows:
  """The rows of this device's block touched by every device's ids, their
  gradients summed (`sharded_embedding.touched_rows`); grads [..., n, d]
  with leading axes (tasks) kept: Rows.grads [..., m, d]."""
  lead, (n, d) = grads.shape[:-2], grads.shape[-2:]
  flat = jnp.moveaxis(grads.reshape((-1, n, d)), 0, 1).reshape(n, -1)
  rows = sharded_embedding.touched_rows(ids, flat, axis_name, num_rows=num_rows)
  g = jnp.moveaxis(rows.grads.reshape(rows.grads.shape[0], -1, d), 1, 0)
  return sparse.Rows(rows.ids, g.reshape(lead + g.shape[1:]))


def global_ids(local_ids, num_rows: int, axis_name: str) -> jax.Array:
  """Local row indices of this device's block -> the table's row ids
  (padding, local >= R, -> num_rows)."""
  n = lax.axis_size(axis_name)
  r = sharded_embedding.rows_per_device(num_rows, n)
  ids = local_ids * n + lax.axis_index(axis_name)
  return jnp.where((local_ids < r) & (ids < num_rows), ids, num_rows)


def psum_if(x, sharded: bool, axis_name):
  """`psum` over the axis of a quantity summed over one device's owned
  rows; a replicated table's (every device has all rows) as it is."""
  return lax.psum(x, axis_name) if sharded else x


def table_of(path, names) -> str | None:
  """The sharded table a leaf at `path` (a jax.tree_util key path of a
  train state or params) belongs to: under 'embed'/<name> (params) or
  'sparse'/<name> (the sparse optimizer's state); None: not one."""
  keys = [getattr(k, 'key', getattr(k, 'name', None)) for k in path]
  for a, b in zip(keys[:-1], keys[1:], strict=True):
    if a in ('embed', 'sparse') and b in names:
      return b
  return None


def shard_state(tree, names, num_devices: int):
  """The sharded tables' leaves [V, ...] of a state or params tree -> the
  blocks side by side [N * R, ...] (sharded_embedding.shard_rows)."""
  return jax.tree_util.tree_map_with_path(
    lambda path, x: (
      x
      if table_of(path, names) is None
      else sharded_embedding.shard_rows(x, num_devices)
    ),
    tree,
  )


def unshard_state(tree, num_rows: dict, num_devices: int):
  """The inverse of `shard_state`; num_rows: {table: V} of the sharded
  tables."""
  return jax.tree_util.tree_map_with_path(
    lambda path, x: (
      x
      if table_of(path, num_rows) is None
      else sharded_embedding.unshard_rows(
        x, num_rows[table_of(path, num_rows)], num_devices
      )
    ),
    tree,
  )


def specs(tree, names, axis_name):
  """PartitionSpecs of a state or params tree: the sharded tables' leaves
  split on their rows over `axis_name`, every other leaf replicated."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: P() if table_of(path, names) is None else P(axis_name),
    tree,
  )
