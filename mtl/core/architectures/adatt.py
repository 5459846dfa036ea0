"""AdaTT: adaptive task-to-task fusion of task-specific experts.

Li, Zhang, Yuan, Gao, Zhang, Yang, Liu, Yang, "AdaTT: Adaptive Task-to-Task
Fusion Network for Multitask Learning in Recommendations", KDD 2023
(arXiv 2304.04959): a deep fusion network of task-specific and optional
shared fusion units at several levels (its model figure), each unit a
gating mechanism plus a residual one. Every task t owns m native experts;
at fusion level l its experts read t's output of level l - 1 (x at l = 0),
and its fusion unit adds the two parts:

  E_t^l   = [e_t1(f_t^{l-1}), ..., e_tm(f_t^{l-1})]     [m, B, H]
  AllExp  = [E_1^l; ...; E_T^l (; E_s^l)]              [T m (+ m_s), B, H]
  g_t^l   = softmax(W_t^l f_t^{l-1})                   [B, T m (+ m_s)]
  f_t^l   = sum_e g_te AllExp_e  +  sum_i v_ti E_ti^l   (linear residual)

the gated fusion of every task's experts (adaptive task-to-task transfer)
and a linear combination of the task's own experts, with learnt weights
v_t [m] (uniform +-1/sqrt(m) at init, as in the authors' code), or v = 1,
fixed, when m = 1. z = f^L [T, B, H] after `num_levels` levels.

`num_shared_experts` m_s = 0 (the default) is AdaTT-sp, task-specific
experts only. m_s > 0 adds the general variant's shared experts E_s, read
by every gate; below the last level a shared fusion unit,
f_s^l = sum_e g_se AllExp_e + sum_j v_sj E_sj^l with its own gate on
f_s^{l-1}, feeds them (the authors' AdaTTWSharedExps). Gates have no
bias, as MMoE's and PLE's in mtl (the authors' code adds one).

Params per level `level_{l}`: 'specific_experts' (GroupedExpertBank
[T, m, ...]), 'shared_experts' (ExpertBank [m_s, ...]), 'task_gates'
{'gate': {'kernel': [T, D_l, T m + m_s]}}, 'native_weights' [T, m] (m > 1),
and below the last level with m_s > 0 'shared_gate' {'kernel': [D_l,
T m + m_s]} and 'shared_native_weights' [m_s] (m_s > 1). Each level sows
intermediates 'gates' [T, B, T m + m_s].
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl.core.architectures.base import Backbone, dense_kernel
from mtl.core.layers.experts import (
  ExpertBank,
  Gate,
  Gates,
  GroupedExpertBank,
  mix,
)
from mtl.errors import ConfigError


def _native_init(m: int):
  scale = math.sqrt(1.0 / m)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


class FusionLevel(nn.Module):
  """One fusion level: (task_x [T, B, D], shared_x [B, D]) -> ([T, B, H],
  [B, H] or None on the last level or without shared experts).

  Attributes:
    num_tasks: T.
    num_specific_experts: m, native experts per task.
    num_shared_experts: m_s.
    expert_hidden: each expert's layer widths (H = expert_hidden[-1]).
    dropout: drop rate inside the experts.
    final: the last level has no shared fusion unit.
  """

  num_tasks: int
  num_specific_experts: int
  num_shared_experts: int
  expert_hidden: tuple[int, ...]
  dropout: float = 0.0
  final: bool = True

  @nn.compact
  def __call__(
    self, task_x: jax.Array, shared_x: jax.Array, *, train: bool
  ) -> tuple[jax.Array, jax.Array | None]:
    t, m, m_s = (
      self.num_tasks,
      self.num_specific_experts,
      self.num_shared_experts,
    )
    native = GroupedExpertBank(
      t, m, self.expert_hidden, self.dropout, name='specific_experts'
    )(task_x, train=train)  # [T, m, B, H]
    every = native.reshape(t * m, *native.shape[2:])  # [T m, B, H]
    if m_s:
      shared = ExpertBank(
        m_s, self.expert_hidden, self.dropout, name='shared_experts'
      )(shared_x, train=train)  # [m_s, B, H]
      every = jnp.concatenate([every, shared], axis=0)
    g = Gates(t, t * m + m_s, per_gate_inputs=True, name='task_gates')(task_x)
    self.sow('intermediates', 'gates', g)
    task_out = mix(g, every) + self.residual('native_weights', native, (t, m))
    if self.final or not m_s:
      return task_out, None
    g_s = Gate(t * m + m_s, name='shared_gate')(shared_x)
    shared_out = jnp.einsum('be,ebh->bh', g_s, every)
    shared_out = shared_out + self.residual(
      'shared_native_weights', shared, (m_s,)
    )
    return task_out, shared_out

  def residual(self, name: str, experts: jax.Array, shape) -> jax.Array:
    """sum_i v_i E_i over the last axis of `shape` (v = 1 for one expert):
    experts [T, m, B, H] -> [T, B, H], or [m_s, B, H] -> [B, H]."""
    if shape[-1] == 1:
      return experts[..., 0, :, :]
    v = self.param(name, _native_init(shape[-1]), shape, jnp.float32)
    return jnp.einsum('...m,...mbh->...bh', v, experts)


class AdaTT(Backbone):
  """num_levels fusion levels: x [B, D] -> z [T, B, H]; params 'level_{l}'.

  Attributes:
    num_tasks: T.
    num_levels: fusion levels L >= 1.
    num_specific_experts: m >= 1, native experts per task and level.
    num_shared_experts: m_s >= 0 per level (0: AdaTT-sp).
    expert_hidden: each expert's layer widths (H = expert_hidden[-1]).
    dropout: drop rate inside the experts.
  """

  num_tasks: int
  num_levels: int = 2
  num_specific_experts: int = 2
  num_shared_experts: int = 0
  expert_hidden: tuple[int, ...] = (64,)
  dropout: float = 0.0

  def __post_init__(self):
    checks = (
      ('num_levels', self.num_levels, 1),
      ('num_specific_experts', self.num_specific_experts, 1),
      ('num_shared_experts', self.num_shared_experts, 0),
    )
    for key, value, low in checks:
      if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(
          f'model.{key} is {value!r}, expected an int >= {low} (AdaTT)'
        )
    super().__post_init__()

  def gradnorm_layer(self) -> tuple[str, ...]:
    """The last level's native experts' last layer: every task's gate reads
    every task's experts."""
    return dense_kernel(
      f'level_{self.num_levels - 1}',
      'specific_experts',
      'bank',
      'mlp',
      num_layers=len(self.expert_hidden),
    )

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [B, D] -> z [T, B, H]."""
    task_x = jnp.broadcast_to(x, (self.num_tasks, *x.shape))
    shared_x = x
    for level in range(self.num_levels):
      task_x, shared_x = FusionLevel(
        self.num_tasks,
        self.num_specific_experts,
        self.num_shared_experts,
        self.expert_hidden,
        self.dropout,
        final=level == self.num_levels - 1,
        name=f'level_{level}',
      )(task_x, shared_x, train=train)
    return task_x
