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
