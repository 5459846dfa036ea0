"""Sequence encoders with parameters: a behaviour history [B, L, d] and its
mask [B, L] (True: a value, False: padding) -> one vector [B, d_out].

Each is a Linen module called as
`Encoder(name=...)(embeddings, mask, query)`, `query` [B, d] the candidate
item's embedding (the categorical feature whose table the sequence shares:
a history's `item`, a sequence's `shared_with`) or None. The embedding stage
(embedding.py) looks them up by a sequence feature's `pooling` in
SEQUENCE_ENCODERS, beside the parameter-free 'mean' and 'sum', so every
architecture takes them unchanged.

Padding never leaks: no output depends on a masked position's embedding
(tests/core/test_sequence.py changes them and compares). Sequences are oldest
first; an empty sequence encodes to zeros.

- din: Zhou et al., "Deep Interest Network for Click-Through Rate
  Prediction", KDD 2018. Each history item h_j gets the weight
  a(h_j, c) of an activation unit (an MLP over [h_j, c, h_j - c, h_j * c];
  the paper's Fig. 2, as its released code forms the interaction) and the
  output is sum_j a(h_j, c) h_j, without a softmax (Sec. 4.3: the sum keeps
  the intensity of the user's interest).
- gru, lstm: a Flax RNN cell (nn.GRUCell, nn.OptimizedLSTMCell) over the
  valid items in time order (Hidasi et al., "Session-based
  Recommendations with Recurrent Neural Networks", ICLR 2016); the output is
  the hidden state after the last valid item.
- transformer: SASRec (Kang and McAuley, "Self-Attentive Sequential
  Recommendation", ICDM 2018): embeddings scaled by sqrt(d) plus learned
  positions, blocks of causal self-attention and a point-wise feed-forward
  layer, each with layer norm and residual; the output is the last
  valid position's. transformer_attn pools the positions instead by an
  attention whose query is the candidate (a learned vector without one).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl.core.layers import initializers
from mtl.errors import ConfigError


def _zero_empty(out: jax.Array, mask: jax.Array) -> jax.Array:
  """Zeros for a sequence with no valid item."""
  return jnp.where(jnp.any(mask, axis=-1, keepdims=True), out, 0.0)


class DIN(nn.Module):
  """Local activation unit (Zhou et al., KDD 2018, Sec. 4.3 and Fig. 2).

  Attributes:
    hidden: the activation unit's hidden widths (PReLU; Fig. 2 has 36).
  """

  hidden: tuple[int, ...] = (36,)

  @nn.compact
  def __call__(self, embeddings, mask, query):
    """[B, L, d], [B, L], candidate [B, d] -> sum_j a_j h_j [B, d]."""
    if query is None:
      raise ConfigError(
        "pooling 'din' needs a candidate, found none: expected a history "
        'or a sequence shared_with a categorical feature'
      )
    c = jnp.broadcast_to(query[:, None, :], embeddings.shape)
    u = jnp.concatenate(
      [embeddings, c, embeddings - c, embeddings * c], axis=-1
    )
    for width in self.hidden:
      u = nn.PReLU()(nn.Dense(width)(u))
    a = nn.Dense(1, name='score')(u)  # [B, L, 1], no softmax.
    keep = mask[..., None]
    return jnp.sum(jnp.where(keep, a * embeddings, 0.0), axis=-2)


def _last_valid(mask: jax.Array) -> jax.Array:
  """Index [B] of each row's last True (0 for an empty row)."""
  positions = jnp.arange(mask.shape[-1])
  return jnp.max(jnp.where(mask, positions, 0), axis=-1)


class _Recurrent(nn.Module):
  """An RNN cell over the valid items, in order; the last valid state.

  The valid items are moved to the front (a stable sort, so their order is
  kept) and nn.RNN returns the carry at step `length - 1` (seq_lengths):
  what follows, the padding, never reaches it.

  Attributes:
    hidden: the state's width; 0: the embeddings' width.
  """

  hidden: int = 0
  cell_type = None

  @nn.compact
  def __call__(self, embeddings, mask, query=None):
    """[B, L, d], [B, L] -> [B, hidden]."""
    del query
    order = jnp.argsort(~mask, axis=-1, stable=True)
    x = jnp.take_along_axis(embeddings, order[..., None], axis=-2)
    lengths = jnp.sum(mask, axis=-1).astype(jnp.int32)
    cell = self.cell_type(self.hidden or embeddings.shape[-1])
    carry, _ = nn.RNN(cell, return_carry=True, name='rnn')(
      x, seq_lengths=jnp.maximum(lengths, 1)
    )
    h = carry[1] if isinstance(carry, tuple) else carry  # LSTM: (c, h).
    return _zero_empty(h, mask)


class GRU(_Recurrent):
  """nn.GRUCell over the valid items (Hidasi et al., ICLR 2016)."""

  cell_type = nn.GRUCell


class LSTM(_Recurrent):
  """nn.OptimizedLSTMCell over the valid items; h of the last (c, h)."""

  cell_type = nn.OptimizedLSTMCell


class Transformer(nn.Module):
  """SASRec's self-attention blocks (Kang and McAuley, ICDM 2018, Sec. III).

  Position j attends to the valid positions i <= j (causal and padding
  masks); every step is position-wise otherwise, so a valid position never
  reads a padded one.

  The embedding stage has no train flag, so there is no dropout (SASRec's
  regulariser on its small datasets).

  Attributes:
    num_blocks: self-attention blocks (SASRec: 2).
    num_heads: attention heads (SASRec: 1).
    pool: 'last' (the last valid position, SASRec) or 'attention'.
  """

  num_blocks: int = 1
  num_heads: int = 1
  pool: str = 'last'

  @nn.compact
  def __call__(self, embeddings, mask, query=None):
    """[B, L, d], [B, L], candidate [B, d] or None -> [B, d]."""
    _, length, d = embeddings.shape
    positions = self.param(
      'positions', initializers.normal(0.02), (length, d), jnp.float32
    )
    x = embeddings * jnp.sqrt(d) + positions
    x = jnp.where(mask[..., None], x, 0.0)
    attend = nn.combine_masks(
      nn.make_causal_mask(mask), nn.make_attention_mask(mask, mask)
    )
    for b in range(self.num_blocks):
      q = nn.LayerNorm(name=f'attention_norm_{b}')(x)
      a = nn.MultiHeadDotProductAttention(
        self.num_heads, name=f'attention_{b}'
      )(q, x, mask=attend)
      x = q + a
      f = nn.LayerNorm(name=f'ffn_norm_{b}')(x)
      f = nn.Dense(d, name=f'ffn_out_{b}')(
        nn.relu(nn.Dense(d, name=f'ffn_in_{b}')(f))
      )
      x = jnp.where(mask[..., None], x + f, 0.0)
    x = nn.LayerNorm(name='out_norm')(x)
    if self.pool == 'last':
      last = _last_valid(mask)
      out = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
    else:
      if query is None:
        query = self.param('query', initializers.normal(0.02), (d,))
        query = jnp.broadcast_to(query, x[:, 0].shape)
      logits = jnp.einsum('bd,bld->bl', query, x) / jnp.sqrt(d)
      w = jax.nn.softmax(jnp.where(mask, logits, -1e9), axis=-1)
      out = jnp.einsum('bl,bld->bd', jnp.where(mask, w, 0.0), x)
    return _zero_empty(out, mask)


class TransformerAttention(Transformer):
  """SASRec blocks pooled by attention with the candidate as the query."""

  pool: str = 'attention'


ENCODERS = {
  'din': DIN,
  'gru': GRU,
  'lstm': LSTM,
  'transformer': Transformer,
  'transformer_attn': TransformerAttention,
}
