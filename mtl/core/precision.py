"""The compute precision of the backbone and the towers (config.precision),
and the embedding tables' storage dtype (config.embedding.dtype).

'float32' (the default) is the plain program. 'bfloat16' computes the
matmuls and activations of the experts, gates, shared networks and towers
in bfloat16 (Kalamkar et al., "A Study of BFLOAT16 for Deep Learning
Training", arXiv 2019; mixed precision after Micikevicius et al., "Mixed
Precision Training", ICLR 2018, Sec. 3.1: a float32 master copy of the
weights): a module's float32 params are read through a bfloat16 view
(`nn.map_variables`), its input is cast to bfloat16, so every Dense, Gate
and einsum of every architecture runs in bfloat16 with no change to the
architecture, and its result is cast back to float32.

What stays float32: the params themselves and their gradients (the cast's
transpose gives float32 cotangents), the optimizer state, the embedding
tables (unless embedding.dtype, below) and the numeric / interaction /
wide parts, the logits (cast before
the losses, the binned AUC counts and `head_logits`), and everything the
train step computes from gradients (Gram matrices, balancing weights,
combinations of per-task gradients). A bfloat16 number has 8 significant
bits: each rounding is off by at most 2^-9 relative (round to nearest), so
a logit differs from float32's on the same params by a few 2^-8 relative to
the magnitudes summed into it.

The embedding tables' storage dtype is a separate choice
(config.embedding.dtype, EMBEDDING_DTYPES): 'bfloat16' stores each table
(params embed/<table>) in bfloat16, 2 bytes an entry instead of 4, so
2 * dim bytes less a row. Its lookups are cast to float32, exactly
(layers/embedding.py); the step differentiates a float32 view of the
params (`float32_view`), so the tables' gradients, their all-reduce and
every Gram matrix stay float32; the optimizer's moments are float32
(`float32_moments`, and the sparse optimizers' state, mtl/core/sparse.py),
as FBGEMM's TBE keeps a bfloat16 / float16 table's optimizer state in
float32; an update is computed in float32 and the new row rounded to the
nearest bfloat16 once (optax.apply_updates' cast; no stochastic rounding).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

# config.precision -> the compute dtype of the backbone and the towers.
PRECISIONS = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# config.embedding.dtype -> the storage dtype of the embedding tables.
EMBEDDING_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _view(dtype) -> Callable[[Any], Any]:
  """The params' float32 leaves seen as `dtype` (others unchanged)."""

  def cast(variables):
    return jax.tree.map(
      lambda p: p.astype(dtype) if p.dtype == jnp.float32 else p, variables
    )

  return cast


def run(
  parent: nn.Module,
  precision: str,
  module: nn.Module,
  x: jax.Array,
  **kwargs,
) -> jax.Array:
  """`module(x, **kwargs)` computed in `precision`, its output float32.

  'float32' calls the module as it is. Otherwise x and the module's params
  are read as PRECISIONS[precision] and the output cast to float32; at
  init the module runs unmapped, so its params are created exactly as in
  float32 (same paths, same bits).
  """
  if precision not in PRECISIONS:
    raise ValueError(
      f'precision is {precision!r}, expected one of {", ".join(PRECISIONS)}'
    )
  dtype = PRECISIONS[precision]
  if dtype == jnp.float32 or parent.is_initializing():
    return module(x, **kwargs)

  def call(mdl, x):
    return mdl(x, **kwargs)

  mapped = nn.map_variables(call, 'params', trans_in_fn=_view(dtype))
  y = mapped(module, x.astype(dtype))
  return y.astype(jnp.float32)


def float32_view(tree):
  """`tree` with its bfloat16 leaves cast to float32 (exact); the others,
  a float32 run's every leaf, are the same arrays."""
  return jax.tree.map(
    lambda x: x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x, tree
  )


def float32_moments(tx):
  """`tx` whose state and updates are float32 for bfloat16 params.

  init and update see float32_view of the params and gradients, so Adam's
  moments (any optax state shaped like the params) are float32; the float32
  updates are added by optax.apply_updates, which rounds the sum to the
  param's bfloat16 once. A SparseTables (mtl/core/sparse_train.py): its
  dense optimizer wrapped; its sparse tables' state is float32 already.
  """
  if not isinstance(tx, optax.GradientTransformation):  # SparseTables
    return tx._replace(dense=float32_moments(tx.dense))

  def init(params):
    return tx.init(float32_view(params))

  def update(grads, state, params=None):
    return tx.update(float32_view(grads), state, float32_view(params))

  return optax.GradientTransformation(init, update)
