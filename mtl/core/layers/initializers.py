"""Normal initializers that give the same bits under `jit` as op by op.

Flax's `initializers.normal(s)` and `linear.default_embed_init` compute
`random.normal(key, shape) * c`, and `random.normal` itself ends in a
multiplication by sqrt(2). Run op by op, the two products are rounded in
turn; under `jit`, XLA folds them into one (x * (sqrt(2) * c)), one ulp
away on some entries (a census embedding table: 1.2e-7). The model is
initialised under `jit` (mtl/core/train_state.py) and its params must not
depend on that: these initializers put an optimization barrier between the
two products, so jitted, vmapped or op by op they equal flax's own
initializers run op by op, bit for bit (tests/core/layers/test_initializers.py).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def _unfolded_normal(key, shape, dtype) -> jax.Array:
  return jax.lax.optimization_barrier(jax.random.normal(key, shape, dtype))


def normal(stddev: float):
  """flax.linen.initializers.normal(stddev)."""

  def init(key, shape, dtype=jnp.float32) -> jax.Array:
    return _unfolded_normal(key, shape, dtype) * jnp.array(stddev, dtype)

  return init


def embed_init(key, shape, dtype=jnp.float32) -> jax.Array:
  """flax.linen.linear.default_embed_init: variance_scaling(1.0, 'fan_in',
  'normal', out_axis=0), with jax's fan arithmetic (in_axis -2)."""
  in_size, out_size = shape[-2], shape[0]
  fan_in = in_size * (math.prod(shape) / in_size / out_size)
  variance = jnp.array(1.0 / fan_in, dtype=dtype)
  return _unfolded_normal(key, shape, dtype) * jnp.sqrt(variance)


def counters(ids, dim: int):
  """The (high, low) uint32 halves of ids[:, None] * dim + arange(dim): the
  flat indices of rows `ids` of a [V, dim] array (ids < 2^32, dim < 2^16)."""
  ids = jnp.asarray(ids, jnp.uint32)[:, None]
  j = jnp.arange(dim, dtype=jnp.uint32)[None, :]
  d = jnp.uint32(dim)
  t1 = (ids >> 16) * d  # ids = a 2^16 + b: ids * dim = t1 2^16 + t2.
  t2 = (ids & jnp.uint32(0xFFFF)) * d + j
  low = (t1 << 16) + t2  # Wraps mod 2^32.
  high = (t1 >> 16) + (low < t2).astype(jnp.uint32)  # The carry.
  return high, low


def normal_rows(key, ids, dim: int) -> jax.Array:
  """Rows `ids` of `jax.random.normal(key, (V, dim), float32)`, bit for bit,
  without drawing the other rows: each device of a table split by rows
  draws its own rows only (mtl/core/sharded_tables.py).

  jax's partitionable threefry (jax_threefry_partitionable, the default)
  draws entry p of an array from the counter p, its flat index: the bits
  are the xor of threefry2x32's two words at (key, p), then made uniform
  in [nextafter(-1, 0), 1) and sqrt(2) erfinv of it, as jax.random.normal
  does (tests/core/layers/test_initializers.py holds this to jax's own).
  """
  from jax.extend.random import threefry2x32_p

  k1, k2 = jax.random.key_data(key)
  high, low = counters(ids, dim)
  b1, b2 = threefry2x32_p.bind(
    jnp.broadcast_to(k1, high.shape),
    jnp.broadcast_to(k2, high.shape),
    high,
    low,
  )
  bits = b1 ^ b2
  one = jnp.uint32(0x3F800000)  # float32 1.0
  floats = jax.lax.bitcast_convert_type((bits >> 9) | one, jnp.float32)
  lo = np.nextafter(np.float32(-1.0), np.float32(0.0), dtype=np.float32)
  u = jnp.maximum(lo, (floats - np.float32(1.0)) * (np.float32(1.0) - lo) + lo)
  return np.float32(np.sqrt(2)) * jax.lax.erf_inv(u)


def embed_rows(key, ids, shape) -> jax.Array:
  """Rows `ids` of `embed_init(key, shape)` (float32), bit for bit."""
  in_size, out_size = shape[-2], shape[0]
  fan_in = in_size * (math.prod(shape) / in_size / out_size)
  variance = jnp.array(1.0 / fan_in, jnp.float32)
  x = jax.lax.optimization_barrier(normal_rows(key, ids, shape[1]))
  return x * jnp.sqrt(variance)
