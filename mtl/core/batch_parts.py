"""Disjoint parts of the global batch: independent samples within one step.

Some balancing methods need several independent stochastic gradients per
step (MoDo's and SDMGrad's multiple sampling: one sample to step the
weights on, an independent one to move the model with). The step takes
them from one batch: part k (k < `NUM_PARTS`) is the rows whose index in
the GLOBAL batch is k mod NUM_PARTS, each part's loss the mean over its own
rows (their masked sum over the part's global row count). Defined on the
global row index (device d holds rows d B_local ... (d + 1) B_local - 1,
the split of `mtl.core.parallel`), the parts, and so their reduced
gradients, are the same on one device and on several; the batch is shuffled,
so the parts are independent samples.
"""

import jax.numpy as jnp
from jax import lax

# Three: MoDo and SDMGrad each use three independent samples per step.
NUM_PARTS = 3


def part_of_rows(num_rows: int, axis_name: str | None) -> jnp.ndarray:
  """[B] int32: the part of each of this shard's rows."""
  index = jnp.arange(num_rows, dtype=jnp.int32)
  if axis_name is not None:
    index = index + lax.axis_index(axis_name) * num_rows
  return index % NUM_PARTS


def part_masks(mask: jnp.ndarray, axis_name: str | None) -> jnp.ndarray:
  """[K, T, B]: the row mask [T, B] of each part (0 outside it)."""
  part = part_of_rows(mask.shape[-1], axis_name)
  return jnp.stack(
    [jnp.where(part == k, mask, 0).astype(mask.dtype) for k in range(NUM_PARTS)]
  )
