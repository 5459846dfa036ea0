"""Two towers: a user tower, an item tower and one interaction per task.

The user tower is a DNN over the user's features, its history among them
(pooled, or encoded by a sequence encoder: 'gru' gives an RNN user tower as
Hidasi et al. 2016, 'din' a candidate-aware one; mtl/core/layers/
sequence.py); the item tower a DNN over the item's features (Huang et al.,
"Learning Deep Structured Semantic Models for Web Search using
Clickthrough Data" (DSSM), CIKM 2013; Covington, Adams and Sargin, "Deep
Neural Networks for YouTube Recommendations", RecSys 2016; Yi et al.,
"Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations", RecSys 2019). Each tower is MLP(hidden[:-1]) then a
linear Dense(hidden[-1]): h [B, Hu], g [B, Hi].

Which feature feeds which tower is the config's model.user_features and
model.item_features (every feature in exactly one); the model tells the
backbone which columns of x each feature fills (`input_layout`). A backbone
called without names (the contract tests) feeds all of x to both.

Interactions, task k (z_k [B, H] goes to task k's tower: its Dense(1)
kernel a_k and bias b_k finish the form; with towers.hidden = (), exactly):
- bilinear: z_k = h * (W_k g): logit h^T diag(a_k) W_k g + b_k, a bilinear
  form per task (Rendle's factorised bilinear score, one W_k per task);
- bilinear_shared: z_k = h * (W g): one W shared, and per task the
  diagonal a_k and b_k: h^T diag(a_k) W g + b_k;
- dot: z_k = h * g: a per-task weighted dot product h^T diag(a_k) g + b_k;
- mlp: z_k = [h, g, h * g] and task k's tower is an MLP over it.

TwoTowerMMoE puts an MMoE expert bank (Ma et al., KDD 2018) over the two
towers' outputs: experts and per-task gates read [h, g, h * g].
`item_embeddings(model, params, features)` runs the item tower alone, to
embed a catalogue.
"""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl.core.architectures.base import Backbone, dense_kernel
from mtl.core.layers import initializers
from mtl.core.layers.embedding import FeatureEmbedding
from mtl.core.layers.experts import ExpertBank, Gates, mix
from mtl.core.layers.mlp import MLP
from mtl.errors import ConfigError

INTERACTIONS = ('bilinear', 'bilinear_shared', 'dot', 'mlp')


def check_features(user, item, layout=None) -> None:
  """One-line ConfigErrors: each tower's features named, known, disjoint,
  and every feature of the layout in one of them. Without a layout (the
  config before the data is read): named and disjoint."""
  names = None if layout is None else [name for name, _, _ in layout]
  for key, chosen in (('user_features', user), ('item_features', item)):
    if not chosen:
      raise ConfigError(
        f'model.{key} is empty, expected '
        + (
          f"the names of the {key[:4]} tower's features"
          if names is None
          else f'some of the features: {", ".join(names)}'
        )
      )
    for name in chosen:
      if names is not None and name not in names:
        raise ConfigError(
          f'model.{key} names {name!r}, which is not a feature; expected '
          f'one of {", ".join(names)}'
        )
  both = sorted(set(user) & set(item))
  if both:
    raise ConfigError(
      f'feature {both[0]!r} is in model.user_features and item_features, '
      'expected one tower each'
    )
  if names is None:
    return
  left = [n for n in names if n not in user and n not in item]
  if left:
    raise ConfigError(
      f'feature {left[0]!r} is in neither model.user_features nor '
      'item_features, expected every feature in one tower'
    )


class TwoTower(Backbone):
  """x [B, D] -> user h, item g -> z [T, B, H] per the interaction.

  Params 'user_mlp', 'user_out', 'item_mlp', 'item_out', and 'bilinear'
  ([T, Hu, Hi] or [Hu, Hi]). Sows h and g as intermediates 'user', 'item'.

  Attributes:
    num_tasks: T.
    user_features, item_features: the features of each tower.
    user_hidden, item_hidden: each tower's widths (H = the last).
    interaction: one of INTERACTIONS (module docstring).
    dropout: drop rate inside the towers' MLPs.
  """

  num_tasks: int
  user_features: tuple[str, ...] = ()
  item_features: tuple[str, ...] = ()
  user_hidden: tuple[int, ...] = (64, 32)
  item_hidden: tuple[int, ...] = (64, 32)
  interaction: str = 'bilinear'
  dropout: float = 0.0

  input_layout: ClassVar[bool] = True

  def setup(self):
    if self.interaction not in INTERACTIONS:
      raise ConfigError(
        f'model.interaction is {self.interaction!r}, expected one of '
        f'{", ".join(INTERACTIONS)}'
      )
    hu, hi = self.user_hidden[-1], self.item_hidden[-1]
    if self.interaction in ('dot', 'mlp') and hu != hi:
      raise ConfigError(
        f'model.user_hidden ends in {hu} and item_hidden in {hi}, expected '
        f'equal widths for interaction {self.interaction!r}'
      )
    self.user_mlp = MLP(self.user_hidden[:-1], self.dropout)
    self.user_out = nn.Dense(hu)
    self.item_mlp = MLP(self.item_hidden[:-1], self.dropout)
    self.item_out = nn.Dense(hi)
    init = initializers.normal(hi**-0.5)
    if self.interaction == 'bilinear':
      self.bilinear = self.param('bilinear', init, (self.num_tasks, hu, hi))
    elif self.interaction == 'bilinear_shared':
      self.bilinear = self.param('bilinear', init, (hu, hi))
    self.setup_head()

  def setup_head(self):
    """The variant's own modules (TwoTowerMMoE's experts and gates)."""

  def gradnorm_layer(self) -> tuple[str, ...]:
    """The user tower's output layer: every task reads it."""
    return ('backbone', 'user_out', 'kernel')

  def _columns(self, x, layout, names):
    if layout is None:
      return x
    check_features(self.user_features, self.item_features, layout)
    parts = [x[..., a:b] for name, a, b in layout if name in names]
    return jnp.concatenate(parts, axis=-1)

  def user_embedding(self, x, layout=None, train: bool = False):
    """x [B, D] -> h [B, Hu], from the user features' columns."""
    u = self._columns(x, layout, self.user_features)
    return self.user_out(self.user_mlp(u, train=train))

  def item_embedding(self, x, layout=None, train: bool = False):
    """x [B, D] -> g [B, Hi], from the item features' columns alone."""
    v = self._columns(x, layout, self.item_features)
    return self.item_out(self.item_mlp(v, train=train))

  def __call__(self, x, *, train: bool, layout=None) -> jax.Array:
    """x [B, D] -> z [T, B, H]."""
    h = self.user_embedding(x, layout, train)
    g = self.item_embedding(x, layout, train)
    self.sow('intermediates', 'user', h)
    self.sow('intermediates', 'item', g)
    return self.head(h, g, train)

  def head(self, h, g, train: bool) -> jax.Array:
    """h [B, Hu], g [B, Hi] -> z [T, B, H] (module docstring)."""
    del train
    t = self.num_tasks
    if self.interaction == 'bilinear':
      return h[None] * jnp.einsum('kuv,bv->kbu', self.bilinear, g)
    if self.interaction == 'bilinear_shared':
      z = h * (g @ self.bilinear.T)
    elif self.interaction == 'dot':
      z = h * g
    else:
      z = jnp.concatenate([h, g, h * g], axis=-1)
    return jnp.broadcast_to(z, (t, *z.shape))


class TwoTowerMMoE(TwoTower):
  """Two towers, then an MMoE over u = [h, g, h * g] (Ma et al., KDD 2018):
  z_k = sum_e softmax(W_k u)_e f_e(u); each task's tower is its head.

  Params as TwoTower's (no 'bilinear') plus 'experts' and 'task_gates'.

  Attributes:
    num_experts: E.
    expert_hidden: each expert's widths.
  """

  interaction: str = 'mlp'
  num_experts: int = 4
  expert_hidden: tuple[int, ...] = (64,)

  def setup_head(self):
    if self.interaction != 'mlp':
      raise ConfigError(
        f"model.interaction is {self.interaction!r} with 'two_tower_mmoe', "
        "expected 'mlp' (its experts read [h, g, h * g])"
      )
    self.experts = ExpertBank(
      self.num_experts, self.expert_hidden, self.dropout
    )
    self.task_gates = Gates(self.num_tasks, self.num_experts)

  def gradnorm_layer(self) -> tuple[str, ...]:
    """The experts' last layer: all tasks read every expert."""
    return dense_kernel('experts', 'mlp', num_layers=len(self.expert_hidden))

  def head(self, h, g, train: bool) -> jax.Array:
    u = jnp.concatenate([h, g, h * g], axis=-1)
    gates = self.task_gates(u)
    self.sow('intermediates', 'gates', gates)
    return mix(gates, self.experts(u, train=train))


def item_embeddings(model, params, features) -> jax.Array:
  """g [N, Hi]: the item tower of a two-tower `model` (MultiTaskModel) alone.

  `features` {'dense': [N, F], 'sparse': [N, S]} in the dataset's layout;
  only the item features' columns reach the tower (the user ones may hold
  anything, e.g. zeros, for a catalogue).
  """
  from mtl.core.model import feature_layout  # model imports architectures.

  embed = FeatureEmbedding(model.vocab_sizes, model.embed_dim)
  x = embed.apply(
    {'params': params.get('embed', {})}, features['dense'], features['sparse']
  )
  layout = feature_layout(
    model.vocab_sizes, model.embed_dim, model.feature_names, x.shape[-1]
  )
  return model.backbone.apply(
    {'params': params['backbone']}, x, layout, method='item_embedding'
  )
