"""L2 on the embedding rows a step touches (config.optimizer.embedding_l2).

The penalty and where it is added are described in mtl/core/sparse_train.py's
module docstring (DeepCTR's `l2_reg_embedding`, per distinct row of the
global batch): 2 * lambda * row on the touched rows' gradients, after the
weighting method and before clipping and the optimizer.
"""

import jax
import jax.numpy as jnp

from mtl.core import sharded_tables
from mtl.core.layers import embedding

EMBED = 'embed'


def add_row_l2(
  row_l2, model, params, dense_grads, rows, sparse_ids, axis, sharded=()
):
  """(dense_grads, rows) with 2 * lambda * row added on the touched rows of
  each table of `row_l2`: in `rows` (combined) for a sparse table (a
  `sharded` one's owned rows, in its block), on the dense gradient
  [(T,) V, d] for a dense one (module docstring)."""
  layout, shapes = embedding.lookups(model.vocab_sizes, model.embed_dim)
  layout = [lk for lk in layout if lk.table in row_l2]
  padded = {lk.table for lk in layout if lk.offsets is None}
  embed, rows = dict(dense_grads[EMBED]), dict(rows)
  for name, lam in sorted(row_l2.items()):
    table, v = params[EMBED][name], shapes[name][0]
    first = embedding.PAD_ID + 1 if name in padded else 0
    if name in rows:  # Sparse: ids ascending, >= V padding.
      r = rows[name]
      ids = r.ids
      if name in sharded:
        ids = sharded_tables.global_ids(ids, v, axis)
      keep = ((ids >= first) & (ids < v))[:, None]
      w = jnp.take(table, r.ids, axis=-2, mode='fill', fill_value=0)
      w = w.astype(r.grads.dtype)  # A bfloat16 table's rows: float32.
      g = jnp.where(keep, r.grads + (2 * lam) * w, r.grads)
      rows[name] = r._replace(grads=g)
      continue
    ids = jnp.concatenate(
      [lk.ids(sparse_ids).reshape(-1) for lk in layout if lk.table == name]
    )
    if axis is not None:
      ids = jax.lax.all_gather(ids, axis, tiled=True)
    ids = jnp.where((ids >= first) & (ids < v), ids, v)
    keep = jnp.zeros((v,), bool).at[ids].set(True, mode='drop')[:, None]
    g = embed[name]
    embed[name] = jnp.where(keep, g + (2 * lam) * table.astype(g.dtype), g)
  return {**dense_grads, EMBED: embed}, rows
