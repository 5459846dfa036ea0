"""Dense features concatenated with embeddings of the categorical ids."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class FeatureEmbedding(nn.Module):
  """x = [dense, emb(sparse_0), ..., emb(sparse_{S-1})]: [B, F + S*embed_dim].

  All S features share ONE table of sum(vocab_sizes) rows, feature s owning
  rows [offset_s, offset_s + vocab_sizes[s]), so the lookup is one gather and
  no two features share a row. With S = 0 there is no table (and no params):
  the dense features pass through unchanged.

  Attributes:
    vocab_sizes: vocabulary size of each sparse column, in column order.
    embed_dim: width of each embedding.
  """

  vocab_sizes: tuple[int, ...]
  embed_dim: int

  @nn.compact
  def __call__(self, dense: jax.Array, sparse: jax.Array) -> jax.Array:
    """dense [B, F] float32, sparse [B, S] int32 -> x [B, F + S*embed_dim]."""
    num_sparse = len(self.vocab_sizes)
    if sparse.ndim != 2 or sparse.shape[1] != num_sparse:
      raise ValueError(
        f'FeatureEmbedding: sparse is {list(sparse.shape)}, expected '
        f'[B, {num_sparse}] (one column per vocab size)'
      )
    dense = jnp.asarray(dense, jnp.float32)
    if num_sparse == 0:
      return dense
    table = self.param(
      'table',
      nn.linear.default_embed_init,
      (sum(self.vocab_sizes), self.embed_dim),
      jnp.float32,
    )
    offsets = np.cumsum((0,) + tuple(self.vocab_sizes[:-1]), dtype=np.int32)
    rows = jnp.take(table, sparse + offsets, axis=0)  # [B, S, embed_dim]
    flat = rows.reshape(sparse.shape[0], num_sparse * self.embed_dim)
    return jnp.concatenate([dense, flat], axis=-1)
