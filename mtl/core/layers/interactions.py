"""Explicit feature interactions put in front of any backbone.

`config.interaction` chooses one (`INTERACTIONS`); the model then feeds the
backbone `concat(x, interaction(x))` instead of the embedded x [B, D]:

- 'fm': the second-order term of a factorization machine (Rendle,
  "Factorization Machines", ICDM 2010, eq. 1 and its O(kn) form, lemma
  3.1) kept as a vector, the bi-interaction `0.5 * ((sum_i v_i)^2 -
  sum_i v_i^2)` [B, d] of the sparse fields' embeddings v_i (a pooled
  sequence is one field), which equals `sum_{i<j} v_i * v_j`. No params.
- 'dcn_v2': the cross network of DCN-V2 (Wang et al., "DCN V2: Improved
  Deep & Cross Network and Practical Lessons for Web-scale Learning to Rank
  Systems", WWW 2021, eq. 1), `x_{l+1} = x_0 * (W_l x_l + b_l) + x_l` over
  the whole x [B, D], `num_layers` layers; with `low_rank` r > 0 each W_l is
  the product `U_l V_l^T` of two [D, r] matrices (sec. 5), params `down_l`
  (V_l^T, no bias) and `up_l` (U_l and b_l), else `layer_l` (W_l, b_l).

Params under the model's top-level `interaction`; they are shared by the
tasks like the embeddings (with a backbone that takes per-task inputs, x
[T, B, D], the model vmaps the cross network: one per task, params stacked
[T, ...], as the per-task tables are).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl.core.layers.embedding import Column, feature_groups

INTERACTIONS = ('none', 'fm', 'dcn_v2')


def field_widths(vocab_sizes, embed_dim: int) -> tuple[int, ...]:
  """The widths of the sparse fields at the end of the embedded x, in order
  (FeatureEmbedding's: a column each for plain-int vocab sizes, a feature
  each for Columns, a sequence's pooled vector being one field)."""
  vocab_sizes = tuple(vocab_sizes)
  if any(isinstance(v, Column) for v in vocab_sizes):
    groups, tables = feature_groups(vocab_sizes, embed_dim)
    return tuple(tables[table][1] for _, table, *_ in groups)
  return (embed_dim,) * len(vocab_sizes)


def bi_interaction(x: jax.Array, widths: tuple[int, ...]) -> jax.Array:
  """x [..., D] whose last sum(widths) columns are fields of equal width d
  -> [..., d]: 0.5 * ((sum_i v_i)^2 - sum_i v_i^2), Rendle's O(kn) form."""
  if not widths or len(set(widths)) != 1:
    raise ValueError(f'fields of widths {widths}, expected one width d')
  n, d = len(widths), widths[0]
  v = x[..., x.shape[-1] - n * d :].reshape(*x.shape[:-1], n, d)
  total = jnp.sum(v, axis=-2)
  return 0.5 * (jnp.square(total) - jnp.sum(jnp.square(v), axis=-2))


class CrossNetwork(nn.Module):
  """DCN-V2's cross layers: x [..., D] -> x_L [..., D] (module docstring).

  Attributes:
    num_layers: L, the number of cross layers.
    low_rank: r > 0: W_l = U_l V_l^T of rank r; 0: a full [D, D] W_l.
  """

  num_layers: int = 2
  low_rank: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    x0, xl = x, x
    for layer in range(self.num_layers):
      if self.low_rank:
        h = nn.Dense(self.low_rank, use_bias=False, name=f'down_{layer}')(xl)
        h = nn.Dense(width, name=f'up_{layer}')(h)
      else:
        h = nn.Dense(width, name=f'layer_{layer}')(xl)
      xl = x0 * h + xl
    return xl


def _cross(module: CrossNetwork, x: jax.Array) -> jax.Array:
  return module(x)


class Interaction(nn.Module):
  """x [B, D] (or [T, B, D]) -> concat(x, interaction(x)) on the last axis.

  Attributes:
    kind: one of INTERACTIONS ('none' returns x).
    widths: the sparse fields' widths (field_widths), for 'fm'.
    num_layers: DCN-V2's layers.
    low_rank: DCN-V2's rank (0: full rank).
    num_tasks: T > 0 when x is [T, B, D]: a cross network per task.
  """

  kind: str = 'none'
  widths: tuple[int, ...] = ()
  num_layers: int = 2
  low_rank: int = 0
  num_tasks: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == 'none':
      return x
    if self.kind == 'fm':
      extra = bi_interaction(x, self.widths)
    elif self.kind == 'dcn_v2':
      cross = CrossNetwork(self.num_layers, self.low_rank, name='cross')
      if self.num_tasks:
        extra = nn.vmap(
          _cross,
          variable_axes={'params': 0},
          split_rngs={'params': True},
          in_axes=0,
          out_axes=0,
          axis_size=self.num_tasks,
        )(cross, x)
      else:
        extra = cross(x)
    else:
      raise ValueError(
        f'interaction {self.kind!r}, expected one of {INTERACTIONS}'
      )
    return jnp.concatenate([x, extra], axis=-1)
