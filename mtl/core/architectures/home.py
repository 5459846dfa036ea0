"""HoME: a hierarchy of meta, task-group and task experts.

Wang, Cao, Fu, Gai, Zhou, "HoME: Hierarchy of Multi-Gate Experts for
Multi-Task Learning at Kuaishou", arXiv 2408.05430, 2024. Its three
mechanisms, as implemented here (the paper's names, described, not
numbered):

Expert normalisation and Swish. Every expert is an MLP whose output is
normalised, then passed through Swish, so the experts' outputs share one
scale and no expert is mostly zeros (the paper's expert collapse):

  E(x) = Swish(Norm(MLP(x))),  Swish(u) = u sigmoid(u),
  Norm(h) = scale * (h - mu) / sqrt(var + eps) + bias,   eps = 1e-5.

The paper normalises over the batch (BatchNorm). Here mu and var are each
example's mean and variance over the H units (LayerNorm's statistics):
batch statistics would need running averages outside the params for
evaluation, and would differ between one device and a data-parallel shard
of the batch. `scale`, `bias` [H] are learnt per expert (init 1, 0).

Hierarchy mask. Tasks are split into groups (`task_groups`, e.g. the
paper's passive and interactive behaviours). Level 0 ("meta") has m_s
shared experts and m_g experts per group, all reading x [B, D]; group c's
node mixes the shared and c's experts, the shared node mixes them all:

  M_c = sum softmax(x W_c) [S; G_c]  +  self(x, G_c)        [B, H]
  M_s = sum softmax(x W_s) [S; G_1; ...]  +  self(x, S)      [B, H]

Level 1 has m_s shared experts reading M_s, m_g experts of group c and
m_t experts of each task t of group c reading M_c; task t's node mixes
them:

  z_t = sum softmax(M_c W_t) [S'; G'_c; T'_t]  +  self(M_c, T'_t)   [B, H]

Feature-gate. Each expert e reads its own gating of its input,
x_e = x * 2 sigmoid(x A_e B_e), A_e [D, r], B_e [r, D] low rank (LoRA);
B_e starts at 0, so every gate starts at 1. Rank r = 0 turns it off.

Self-gate. A residual of each node's own experts (a group's, the shared
node's, a task's) next to its gated mixture of all its experts:
self(x, E) = sum_i softmax(x V)_i E_i, or sigmoid(x V) E with one own
expert; none when the node owns no expert.

Params (G groups, T tasks): 'level_0_experts' (stacked [m_s + G m_g,
...]: 'feature_gate_a', 'feature_gate_b', 'mlp', 'out', 'norm_scale',
'norm_bias'), 'level_0_group_gates' {'gate': {'kernel': [G, D, m_s +
m_g]}}, 'level_0_group_self_gates' {'kernel': [G, D, m_g]} (m_g > 0),
'level_0_shared_gate' {'kernel': [D, m_s + G m_g]} and
'level_0_shared_self_gate' {'kernel': [1, D, m_s]} (m_s > 0);
'level_1_experts' (stacked [m_s + G m_g + T m_t, ...]),
'level_1_task_gates' {'gate': {'kernel': [T, H, m_s + m_g + m_t]}},
'level_1_task_self_gates' {'kernel': [T, H, m_t]} (m_t > 0). Experts are
listed shared first, then by group, then by task. Sows level 1's gate
weights [T, B, m_s + m_g + m_t] as intermediates 'gates', level 0's as
'group_gates' [G, B, m_s + m_g] and 'shared_gate' [B, m_s + G m_g].
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl.core.architectures.base import Backbone
from mtl.core.layers.experts import Gate, Gates, mix
from mtl.core.layers.mlp import MLP
from mtl.errors import ConfigError

EPSILON = 1e-5  # Inside Norm's square root.


def expert_norm(h, scale, bias, eps: float = EPSILON):
  """Norm(h) over the last axis: scale * (h - mean) / sqrt(var + eps) +
  bias."""
  mu = jnp.mean(h, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(h - mu), axis=-1, keepdims=True)
  return scale * (h - mu) * jax.lax.rsqrt(var + eps) + bias


class NormSwishExpert(nn.Module):
  """One expert: x [B, D] -> Swish(Norm(MLP(feature-gated x))) [B, H].

  Params 'feature_gate_a' [D, r], 'feature_gate_b' [r, D] (r > 0), 'mlp'
  (the hidden layers), 'out' (Dense to H), 'norm_scale', 'norm_bias' [H].
  """

  hidden: tuple[int, ...]
  rank: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.rank:
      d = x.shape[-1]
      a = self.param(
        'feature_gate_a', nn.initializers.lecun_normal(), (d, self.rank)
      )
      b = self.param('feature_gate_b', nn.initializers.zeros, (self.rank, d))
      x = x * 2.0 * jax.nn.sigmoid(x @ a @ b)
    h = MLP(self.hidden[:-1], self.dropout, name='mlp')(x, train=train)
    h = nn.Dense(self.hidden[-1], name='out')(h)
    width = self.hidden[-1]
    scale = self.param('norm_scale', nn.initializers.ones, (width,))
    bias = self.param('norm_bias', nn.initializers.zeros, (width,))
    h = nn.swish(expert_norm(h, scale, bias))
    return nn.Dropout(self.dropout, deterministic=not train)(h)


def _experts(x, train, *, num, hidden, rank, dropout, per_expert, name):
  """`num` NormSwishExperts, params stacked [num, ...]: x [B, D] (or
  [num, B, D] with per_expert) -> [num, B, H]."""
  bank = nn.vmap(
    lambda module, x, train: module(x, train),
    variable_axes={'params': 0},
    split_rngs={'params': True, 'dropout': True},
    in_axes=(0 if per_expert else None, None),
    out_axes=0,
    axis_size=num,
  )
  return bank(NormSwishExpert(hidden, rank, dropout, name=name), x, train)


class SelfGates(nn.Module):
  """G self-gates over n own experts each: x [B, D] (or [G, B, D]) ->
  weights [G, B, n], softmax(x V_g) (sigmoid(x V_g) when n = 1); param
  'kernel' [G, D, n]."""

  num_gates: int
  num_experts: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      'kernel',
      nn.initializers.lecun_normal(batch_axis=(0,)),
      (self.num_gates, x.shape[-1], self.num_experts),
    )
    spec = 'gbd,gdn->gbn' if x.ndim == 3 else 'bd,gdn->gbn'
    logits = jnp.einsum(spec, x, kernel)
    if self.num_experts == 1:
      return jax.nn.sigmoid(logits)
    return jax.nn.softmax(logits, axis=-1)


def group_of(task_groups, num_tasks: int) -> np.ndarray:
  """[T] the group index of each task (one group of all tasks if none)."""
  out = np.zeros(num_tasks, np.int32)
  for c, group in enumerate(task_groups):
    out[list(group)] = c
  return out


class HoME(Backbone):
  """Meta level then task level: x [B, D] -> z [T, B, H] (module docstring).

  Attributes:
    num_tasks: T.
    task_groups: a partition of the task indices 0..T-1 into groups, e.g.
      ((0, 1), (2, 3, 4)); () is one group of all tasks.
    num_shared_experts: m_s >= 0, shared experts per level.
    num_group_experts: m_g >= 0, experts per task group and level
      (m_s + m_g >= 1: a group's meta node needs an expert).
    num_task_experts: m_t >= 0, experts per task (level 1).
    expert_hidden: each expert's widths (H = expert_hidden[-1]).
    feature_gate_rank: r >= 0, the rank of each expert's feature-gate
      (0: no feature-gate).
    dropout: drop rate inside the experts.
  """

  num_tasks: int
  task_groups: tuple[tuple[int, ...], ...] = ()
  num_shared_experts: int = 1
  num_group_experts: int = 1
  num_task_experts: int = 1
  expert_hidden: tuple[int, ...] = (64,)
  feature_gate_rank: int = 8
  dropout: float = 0.0

  def __post_init__(self):
    for key in (
      'num_shared_experts',
      'num_group_experts',
      'num_task_experts',
      'feature_gate_rank',
    ):
      value = getattr(self, key)
      if not _is_int(value) or value < 0:
        raise ConfigError(f'model.{key} is {value!r}, expected an int >= 0')
    if self.num_shared_experts + self.num_group_experts < 1:
      raise ConfigError(
        'model.num_shared_experts + num_group_experts is 0, expected >= 1 '
        "(HoME: each group's meta node mixes its shared and group experts)"
      )
    self._check_groups()
    super().__post_init__()

  def _check_groups(self):
    groups, t = self.task_groups, self.num_tasks
    nested = isinstance(groups, tuple | list) and all(
      isinstance(g, tuple | list) and g and all(_is_int(i) for i in g)
      for g in groups
    )
    seen = [i for g in groups for i in g] if nested else None
    if seen is None:
      raise ConfigError(
        f'model.task_groups is {groups!r}, expected a tuple of non-empty '
        'tuples of task indices'
      )
    if groups and sorted(seen) != list(range(t)):
      raise ConfigError(
        f'model.task_groups is {groups!r}, expected each task index '
        f'0..{t - 1} in exactly one group'
      )

  @property
  def groups(self) -> tuple[tuple[int, ...], ...]:
    return self.task_groups or (tuple(range(self.num_tasks)),)

  def gradnorm_layer(self) -> tuple[str, ...]:
    """Level 1's experts' output layer [E, H_in, H]: its shared and group
    experts (m_s + m_g >= 1) feed every task of their reach."""
    return ('backbone', 'level_1_experts', 'out', 'kernel')

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [B, D] -> z [T, B, H]."""
    t, n_g = self.num_tasks, len(self.groups)
    m_s, m_g = self.num_shared_experts, self.num_group_experts
    m_t = self.num_task_experts
    kw = dict(
      hidden=self.expert_hidden, rank=self.feature_gate_rank,
      dropout=self.dropout,
    )  # fmt: skip
    group = group_of(self.groups, t)
    meta = self.meta_level(x, train, kw)  # [G (+1), B, H]
    # Level 1: shared experts read M_s, group c's and its tasks' read M_c.
    source = np.concatenate(
      [
        np.full(m_s, n_g),
        np.repeat(np.arange(n_g), m_g),
        np.repeat(group, m_t),
      ]
    ).astype(np.int32)
    experts = _experts(
      meta[source], train, num=len(source), per_expert=True,
      name='level_1_experts', **kw,
    )  # fmt: skip
    own = [
      np.concatenate(
        [
          np.arange(m_s),
          m_s + group[k] * m_g + np.arange(m_g),
          m_s + n_g * m_g + k * m_t + np.arange(m_t),
        ]
      ).astype(np.int32)
      for k in range(t)
    ]
    task_x = meta[group]  # [T, B, H]: M_c of each task's group c
    g = Gates(t, len(own[0]), True, name='level_1_task_gates')(task_x)
    self.sow('intermediates', 'gates', g)
    z = mix(g, experts[np.stack(own)])
    if m_t:
      tasks = experts[m_s + n_g * m_g :].reshape(t, m_t, *experts.shape[1:])
      z = z + self.self_mix('level_1_task_self_gates', task_x, tasks)
    return z

  def meta_level(self, x, train, kw) -> jax.Array:
    """x [B, D] -> [M_1, ..., M_G (, M_s with m_s > 0)], [G (+1), B, H]."""
    n_g = len(self.groups)
    m_s, m_g = self.num_shared_experts, self.num_group_experts
    experts = _experts(
      x, train, num=m_s + n_g * m_g, per_expert=False,
      name='level_0_experts', **kw,
    )  # fmt: skip
    sel = np.stack(
      [
        np.concatenate([np.arange(m_s), m_s + c * m_g + np.arange(m_g)])
        for c in range(n_g)
      ]
    ).astype(np.int32)
    g = Gates(n_g, m_s + m_g, name='level_0_group_gates')(x)
    self.sow('intermediates', 'group_gates', g)
    meta = mix(g, experts[sel])  # [G, B, H]
    if m_g:
      own = experts[m_s:].reshape(n_g, m_g, *experts.shape[1:])
      meta = meta + self.self_mix('level_0_group_self_gates', x, own)
    if not m_s:
      return meta
    g_s = Gate(m_s + n_g * m_g, name='level_0_shared_gate')(x)
    self.sow('intermediates', 'shared_gate', g_s)
    shared = jnp.einsum('be,ebh->bh', g_s, experts)
    own = experts[None, :m_s]
    shared = shared + self.self_mix('level_0_shared_self_gate', x, own)[0]
    return jnp.concatenate([meta, shared[None]], axis=0)

  def self_mix(self, name, x, own) -> jax.Array:
    """sum_i self-gate_i own_i: own [G, n, B, H] -> [G, B, H]."""
    w = SelfGates(own.shape[0], own.shape[1], name=name)(x)
    return mix(w, own)


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)
