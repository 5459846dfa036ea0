"""The wide part of Wide & Deep: a linear model per output over the ids.

Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016
(sec. 3.1): y = w^T [x, phi(x)] + b over the raw (one-hot) features x and
cross-product transformations phi(x), trained jointly with the deep part by
adding its logit to the deep part's (eq. 3). Here, for each output t:

  wide_t = b_t + sum_f dense_f * u_{f,t}             (dense=True)
         + sum_s sum_{valid ids i of column s} w_s[i, t]
         + sum_{declared crosses (a, b)} c_ab[hash(a, b), t]

- every sparse column has a weight per id per output (a row of the table of
  its feature, [rows, T]); a sequence or history feature adds the SUM of
  its valid ids' weights (the linear model of its multi-hot indicator
  vector); id 0 is padding there and adds nothing. In the per-feature
  (`Column`) layout id 0 never adds anything (categorical values start at
  1, the OOV id); with plain-int vocab sizes (one shared table, census)
  every id is a value and has its weight.
- a cross of two categorical features (`crosses`, by feature name) is the
  paper's cross-product transformation of the two one-hot features, its
  (id_a, id_b) hashed (`cross_bucket`) into `cross_buckets` rows.

Every weight starts at zero, so an enabled wide part starts as the deep
model. Params (the model's top-level collection `wide`, which an optimizer
may give its own rule): `bias` [T], `dense` [F, T], `ids_<feature>`
[rows, T] (`ids_table` for the one shared table), `cross_<a>_x_<b>`
[cross_buckets, T]. They are ordinary dense params: the sparse embedding
updates (optimizer.sparse) choose among the embedding tables only.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl.core.layers.embedding import PAD_ID, Column, lookups
from mtl.errors import ConfigError

DEFAULT_CROSS_BUCKETS = 2**18


def cross_bucket(a: jax.Array, b: jax.Array, buckets: int) -> jax.Array:
  """The row of the pair (a, b) of int32 ids in [0, buckets): a uint32
  multiply-xorshift hash (wrapping arithmetic), the same on every device."""
  u = jnp.uint32
  left = a.astype(u) * u(0x9E3779B1)
  right = (b.astype(u) + u(0x7F4A7C15)) * u(0x85EBCA77)
  h = left ^ right
  h = (h ^ (h >> 16)) * u(0x7FEB352D)
  h = (h ^ (h >> 15)) * u(0x846CA68B)
  h = h ^ (h >> 16)
  return (h % u(buckets)).astype(jnp.int32)


def cross_columns(
  vocab_sizes, sparse_names, crosses
) -> tuple[tuple[int, int], ...]:
  """The sparse columns of each declared cross (a, b); a one-line
  ConfigError naming `wide.crosses` for an unknown or non-categorical
  feature."""
  vocab_sizes, names = tuple(vocab_sizes), tuple(sparse_names)
  columns = {}
  if any(isinstance(v, Column) for v in vocab_sizes):
    seen = {}
    for s, c in enumerate(vocab_sizes):
      seen.setdefault(c.feature, []).append((s, c.pooling))
    columns = {
      f: cols[0][0]
      for f, cols in seen.items()
      if len(cols) == 1 and cols[0][1] is None
    }
    known = sorted(columns)
  elif len(names) == len(vocab_sizes):
    columns = {n: s for s, n in enumerate(names)}
    known = list(names)
  else:
    known = []
  out = []
  for i, pair in enumerate(crosses):
    if len(pair) != 2:
      raise ConfigError(
        f'wide.crosses[{i}] is {tuple(pair)}, expected a pair of feature names'
      )
    for name in pair:
      if name not in columns:
        raise ConfigError(
          f'wide.crosses[{i}] names {name!r}, expected one of the '
          f'categorical features: {", ".join(known) or "(none)"}'
        )
    out.append((columns[pair[0]], columns[pair[1]]))
  return tuple(out)


class Wide(nn.Module):
  """features -> the wide logits [T, B] (module docstring).

  Attributes:
    vocab_sizes: the sparse columns' vocab sizes (the embedding's layout).
    num_outputs: T, the logits it adds to (the model's towers).
    sparse_names: the sparse columns' names (crosses in a plain-int layout).
    dense: a linear term on the dense columns.
    crosses: pairs of categorical feature names crossed by hashing.
    cross_buckets: rows of each cross's table.
  """

  vocab_sizes: tuple[int, ...]
  num_outputs: int
  sparse_names: tuple[str, ...] = ()
  dense: bool = True
  crosses: tuple[tuple[str, str], ...] = ()
  cross_buckets: int = DEFAULT_CROSS_BUCKETS

  @nn.compact
  def __call__(self, dense: jax.Array, sparse: jax.Array) -> jax.Array:
    """dense [B, F] float32, sparse [B, S] int32 -> [T, B]."""
    zeros, t = nn.initializers.zeros, self.num_outputs
    out = self.param('bias', zeros, (t,), jnp.float32)[None, :]
    dense = jnp.asarray(dense, jnp.float32)
    if self.dense and dense.shape[-1]:
      kernel = self.param('dense', zeros, (dense.shape[-1], t), jnp.float32)
      out = out + dense @ kernel
    layout, shapes = lookups(self.vocab_sizes, 1)
    per_feature = any(lk.offsets is None for lk in layout)
    for lk in layout:
      rows = shapes[lk.table][0]
      weights = self.param(f'ids_{lk.name}', zeros, (rows, t), jnp.float32)
      ids = lk.ids(sparse)  # [B, L]
      w = jnp.take(weights, ids, axis=0)  # [B, L, T]
      if per_feature:
        w = jnp.where((ids != PAD_ID)[..., None], w, 0.0)
      out = out + jnp.sum(w, axis=1)
    pairs = cross_columns(self.vocab_sizes, self.sparse_names, self.crosses)
    for (a, b), (name_a, name_b) in zip(pairs, self.crosses, strict=True):
      weights = self.param(
        f'cross_{name_a}_x_{name_b}',
        zeros,
        (self.cross_buckets, t),
        jnp.float32,
      )
      ids_a, ids_b = sparse[:, a], sparse[:, b]
      w = jnp.take(weights, cross_bucket(ids_a, ids_b, self.cross_buckets), 0)
      if per_feature:
        valid = (ids_a != PAD_ID) & (ids_b != PAD_ID)
        w = jnp.where(valid[:, None], w, 0.0)
      out = out + w
    return out.T
