"""An embedding table sharded by rows over a named axis, and its lookup.

Pure jnp/lax; the functions with `axis_name` run inside `jax.shard_map` (or
`jax.pmap`) over that axis, each device holding one block of the table.

Layout (`shard_rows`, `unshard_rows`): a table of V rows over N devices is
padded to N * R rows, R = ceil(V / N), and row `i` is owned by device
`i mod N`, at row `i // N` of that device's block [R, d]. The blocks side by
side, [N * R, d] split on its first axis (`PartitionSpec(axis)`), are the
global array; no device holds more than R <= V / N + 1 rows, its padding
rows (ids >= V) are zero and never read. Ownership by `id mod N`, not by
contiguous ranges: vocabularies are sorted by value (mtl/data/encoding.py),
so ids that are hot together (new items, the padding id 0 and the
out-of-vocabulary id 1) sit side by side, and a range owner would receive
all of them; mod N deals any contiguous run of ids out over every device.

The lookup (`lookup`), for n ids per device of a table of width d:

1. each device de-duplicates its ids (u <= n distinct);
2. it sends each to its owner: a [N, C] buffer, bucket k holding the ids
   owned by device k, through `lax.all_to_all`;
3. each owner gathers its rows from its block;
4. the [N, C, d] rows come back by the reverse `all_to_all`, and each id
   picks its row from its owner's bucket.

Bytes each device sends per step (s: the table's bytes per entry):
(N - 1) * C * (4 + d * s) forward, and (N - 1) * C * d * s more for the
gradient, the reverse route. The alternative, an `all_gather` of the ids
and a `psum_scatter` of rows each owner fills for all N * n ids, sends
(N - 1) * n * (4 + d * s) (ring algorithms): the same as `all_to_all` with
C = n, and N / slack times more than C = slack * n / N. So `all_to_all`,
with the capacity C = min(n, ceil(slack * n / N)) (slack 2 by default):
with ids spread by mod N a bucket holds about n / N ids, give or take
sqrt(n / N) (n = 1024, N = 8: 128 +- 11, capacity 256). A step in which
any device's bucket overflows takes the same route at C = n instead, which
every batch fits (a batch whose ids all belong to one owner); all devices
agree on it through a `pmax` of their largest bucket, so the result is
exact whatever the ids. The row gradient is autodiff's: the transpose of
`all_to_all` is the reverse `all_to_all` and the transpose of a gather a
scatter-add, so duplicates (within a device, then across devices) are
summed into their owner's row.

Ids index as `jnp.take` does: ids in [-V, 0) count from the end, ids
outside [-V, V) give rows of NaN. Padding (0) and out-of-vocabulary (1)
ids are ordinary rows.

`touched_rows` routes a step's row gradients to their owners the same way
and returns, on each device, its touched rows (local indices) and their
summed gradients as a `sparse.Rows`, which `SparseOptimizer.update` takes
with the device's block and its optimizer state.
"""

import math

import jax
import jax.numpy as jnp
from jax import lax

from mtl.core import sparse

SLACK = 2.0


def rows_per_device(num_rows: int, num_devices: int) -> int:
  """R = ceil(V / N): the rows of each device's block."""
  return -(-num_rows // num_devices)


def shard_rows(table: jax.Array, num_devices: int) -> jax.Array:
  """table [V, d] -> the blocks side by side [N * R, d] (module docstring):
  block k (rows k * R to (k + 1) * R) holds rows k, k + N, k + 2N, ...,
  then zeros."""
  num_rows = table.shape[0]
  r = rows_per_device(num_rows, num_devices)
  padded = jnp.zeros((r * num_devices,) + table.shape[1:], table.dtype)
  padded = padded.at[:num_rows].set(table)
  blocks = padded.reshape((r, num_devices) + table.shape[1:])
  return jnp.swapaxes(blocks, 0, 1).reshape(padded.shape)


def unshard_rows(
  blocks: jax.Array, num_rows: int, num_devices: int
) -> jax.Array:
  """The inverse of `shard_rows`: [N * R, d] -> table [V, d]."""
  r = blocks.shape[0] // num_devices
  table = jnp.swapaxes(
    blocks.reshape((num_devices, r) + blocks.shape[1:]), 0, 1
  )
  return table.reshape(blocks.shape)[:num_rows]


def capacity(num_ids: int, num_devices: int, slack: float = SLACK) -> int:
  """C: the ids each device may send each owner in the cheap route."""
  return max(1, min(num_ids, math.ceil(slack * num_ids / num_devices)))


def bytes_sent(
  num_ids: int,
  num_devices: int,
  dim: int,
  itemsize: int,
  *,
  slack: float = SLACK,
  overflow: bool = False,
) -> int:
  """The bytes one device sends in a lookup of `num_ids` ids (module
  docstring): (N - 1) * C * (4 + dim * itemsize), C the cheap route's
  capacity (`overflow`: the full route's, num_ids). Its gradient sends
  (N - 1) * C * dim * itemsize more; `touched_rows` sends as much, with
  itemsize the gradients' bytes per entry."""
  c = num_ids if overflow else capacity(num_ids, num_devices, slack)
  return (num_devices - 1) * c * (4 + dim * itemsize)


def _buckets(owners, valid, num_devices: int, size: int):
  """Each entry's (bucket, slot) in a [N, size] buffer, and the largest
  bucket's count; invalid entries and overflowing ones get slot `size`.

  A cumulative sum of one-hot owners: O(n N) work and memory, 0.2 ms at
  n = 4,096 and N = 8 on CPU, where a stable sort by owner (O(n log n))
  takes 0.5 ms; the sort is the better choice for hundreds of devices."""
  onehot = (owners[:, None] == jnp.arange(num_devices)) & valid[:, None]
  counts = jnp.cumsum(onehot, axis=0, dtype=jnp.int32)
  slot = jnp.take_along_axis(counts, owners[:, None], axis=1)[:, 0] - 1
  slot = jnp.where(valid & (slot < size), slot, size)
  return slot, jnp.max(counts[-1])


def _route(keys, payload, owners, valid, fill, axis_name, num_devices, size):
  """Sends `keys` (and `payload` rows) to their owners in [N, size] buckets
  by `all_to_all`: what each device received, [N, size] (and [N, size,
  ...]), and each entry's slot (`size`: not sent)."""
  slot, _ = _buckets(owners, valid, num_devices, size)

  def send(x, empty):
    buf = jnp.full((num_devices, size + 1) + x.shape[1:], empty, x.dtype)
    buf = buf.at[owners, slot].set(x)[:, :size]
    return lax.all_to_all(buf, axis_name, 0, 0, tiled=True)

  got = send(keys, fill)
  return got, (None if payload is None else send(payload, 0)), slot


def _overflows(owners, valid, axis_name, num_devices, size):
  _, largest = _buckets(owners, valid, num_devices, size)
  return lax.pmax(largest, axis_name) > size


def _distinct(ids, num_rows):
  """ids [n] -> (distinct ids [n], inverse [n], valid [n]): the ids in
  [0, V) once each, then padding (invalid)."""
  n = ids.shape[0]
  uids, inverse = jnp.unique(
    ids, size=n, fill_value=num_rows, return_inverse=True
  )
  return uids, inverse.reshape(-1), uids < num_rows


def lookup(
  local_block: jax.Array,
  ids: jax.Array,
  axis_name: str,
  *,
  num_rows: int,
  slack: float = SLACK,
) -> jax.Array:
  """This device's ids -> their rows, from the blocks of every device.

  Args:
    local_block: [R, d], this device's block of the table (`shard_rows`).
    ids: [...] int, this device's ids (any count, 0 included).
    axis_name: the axis the table is sharded over.
    num_rows: V, the table's rows.
    slack: the cheap route's capacity, in multiples of n / N (`capacity`).

  Returns:
    [..., d]: `jnp.take(table, ids, axis=0)` of the whole table, bit for bit.
  """
  shape = ids.shape
  flat = jnp.asarray(ids, jnp.int32).reshape(-1)
  d = local_block.shape[1:]
  if flat.shape[0] == 0:
    return jnp.zeros(shape + d, local_block.dtype)
  num_devices = lax.axis_size(axis_name)
  r = local_block.shape[0]
  flat = jnp.where(flat < 0, flat + num_rows, flat)
  inside = (flat >= 0) & (flat < num_rows)
  uids, inverse, valid = _distinct(jnp.where(inside, flat, num_rows), num_rows)
  owners = jnp.where(valid, uids % num_devices, 0)
  local = uids // num_devices

  def route(size):
    def go(block):
      got, _, slot = _route(
        local, None, owners, valid, r, axis_name, num_devices, size
      )
      rows = block.at[got].get(mode='fill', fill_value=0)  # [N, size, d]
      back = lax.all_to_all(rows, axis_name, 0, 0, tiled=True)
      return back.at[owners, slot].get(mode='fill', fill_value=0)

    return go

  n = flat.shape[0]
  small = capacity(n, num_devices, slack)
  if small >= n:
    rows = route(n)(local_block)
  else:
    over = _overflows(owners, valid, axis_name, num_devices, small)
    rows = lax.cond(over, route(n), route(small), local_block)
  rows = jnp.take(rows, inverse, axis=0)
  nan = jnp.asarray(jnp.nan, rows.dtype)
  rows = jnp.where(inside.reshape((-1,) + (1,) * len(d)), rows, nan)
  return rows.reshape(shape + d)


def touched_rows(
  ids: jax.Array,
  row_grads: jax.Array,
  axis_name: str,
  *,
  num_rows: int,
  slack: float = SLACK,
) -> sparse.Rows:
  """The rows of this device's block a step touched, gradients summed.

  Args:
    ids: [...] int, this device's ids looked up this step.
    row_grads: [..., d], the loss's gradient with respect to each row.
    axis_name: the axis the table is sharded over.
    num_rows: V; ids outside [0, V) touch nothing.
    slack: as `lookup`'s.

  Returns:
    `sparse.Rows` in this device's block: local row indices (row i of the
    table is row i // N of device i mod N), ascending, each once, padding
    >= R; the sum of the gradients of its occurrences on every device.
  """
  flat = jnp.asarray(ids, jnp.int32).reshape(-1)
  n = flat.shape[0]
  grads = row_grads.reshape((n,) + row_grads.shape[-1:])
  num_devices = lax.axis_size(axis_name)
  r = rows_per_device(num_rows, num_devices)
  if n == 0:
    return sparse.combine(flat, grads, num_rows=r)
  inside = (flat >= 0) & (flat < num_rows)
  uids, inverse, valid = _distinct(jnp.where(inside, flat, num_rows), num_rows)
  summed = jax.ops.segment_sum(grads, inverse, num_segments=n)
  owners = jnp.where(valid, uids % num_devices, 0)
  local = uids // num_devices

  def route(size):
    def go(_):
      got, g, _ = _route(
        local, summed, owners, valid, r, axis_name, num_devices, size
      )
      out = sparse.combine(got, g, num_rows=r)
      pad = n * num_devices - out.ids.shape[0]  # Both routes, one shape.
      return sparse.Rows(
        jnp.concatenate(
          [out.ids, r + out.ids.shape[0] + jnp.arange(pad, dtype=jnp.int32)]
        ),
        jnp.pad(out.grads, ((0, pad), (0, 0))),
      )

    return go

  small = capacity(n, num_devices, slack)
  if small >= n:
    return route(n)(None)
  over = _overflows(owners, valid, axis_name, num_devices, small)
  return lax.cond(over, route(n), route(small), None)
