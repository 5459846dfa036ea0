"""The compute precision of the backbone and the towers (config.precision).

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
tables and the numeric / interaction / wide parts, the logits (cast before
the losses, the binned AUC counts and `head_logits`), and everything the
train step computes from gradients (Gram matrices, balancing weights,
combinations of per-task gradients). A bfloat16 number has 8 significant
bits: each rounding is off by at most 2^-9 relative (round to nearest), so
a logit differs from float32's on the same params by a few 2^-8 relative to
the magnitudes summed into it.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# config.precision -> the compute dtype of the backbone and the towers.
PRECISIONS = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


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
