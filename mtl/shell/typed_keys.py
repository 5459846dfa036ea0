"""Typed PRNG keys on disk as their raw key data (shell code).

A checkpoint stores a typed key (`jax.random.key`) as `key_data` and wraps
it again on restore with the implementation of the abstract state's key, so
keys round-trip bitwise whatever orbax does with key dtypes. `to_disk` works
on concrete and abstract (`jax.ShapeDtypeStruct`) trees alike.
"""

import jax
import jax.numpy as jnp


def is_key(x) -> bool:
  """Whether `x` (an array or ShapeDtypeStruct) is a typed PRNG key."""
  return jax.dtypes.issubdtype(getattr(x, 'dtype', None), jax.dtypes.prng_key)


def _key_impl(abstract_key):
  """The PRNG implementation of a (possibly abstract) typed key."""
  found = []
  jax.eval_shape(lambda k: found.append(jax.random.key_impl(k)), abstract_key)
  return found[0]


def to_disk(tree):
  """Typed keys -> raw key data (works on concrete and abstract trees)."""

  def leaf(x):
    if not is_key(x):
      return x
    if isinstance(x, jax.ShapeDtypeStruct):  # Its placement kept.
      out = jax.eval_shape(jax.random.key_data, x)
      return jax.ShapeDtypeStruct(out.shape, out.dtype, sharding=x.sharding)
    return jax.random.key_data(x)

  return jax.tree.map(leaf, tree)


def from_disk(tree, abstract):
  """Restored arrays -> jax arrays, key data wrapped as the abstract keys."""

  def leaf(x, a):
    if is_key(a):
      return jax.random.wrap_key_data(x, impl=_key_impl(a))
    return jnp.asarray(x)

  return jax.tree.map(leaf, tree, abstract)
