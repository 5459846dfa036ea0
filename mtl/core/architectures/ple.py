"""CGC and PLE: task-specific plus shared experts, extracted level by level.

Tang, Liu, Zhao, Gong, "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020.
CGC (Sec. 4.2): task k's gate mixes only its own m_k experts and the m_s
shared experts. PLE (Sec. 4.3) stacks CGC levels ("extraction networks");
every level but the last also has a shared gate over ALL experts of the level,
whose output feeds the next level's shared experts, and task k's experts and
gate at level j > 1 read task k's output of level j - 1.

Params of a backbone, per level `level_{j}` (CGC is `level_0` alone):
  specific_experts  GroupedExpertBank, stacked [T, m_k, ...]
  shared_experts    ExpertBank, stacked [m_s, ...]
  task_gates        Gates, {'gate': {'kernel': [T, D_j, m_k + m_s]}}
  shared_gate       Gate, {'kernel': [D_j, T*m_k + m_s]}   (not on the last)
Gate columns list experts in the order [task k's specific..., shared...];
the shared gate's in the order [task 0's specific..., task T-1's specific...,
shared...]. Each level sows intermediates 'gates' [T, B, m_k + m_s] and, on
all but the last, 'shared_gate_weights' [B, T*m_k + m_s].
"""

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


class ExtractionNetwork(nn.Module):
  """One CGC level: per-task outputs [T, B, H] (+ shared output [B, H]).

  Attributes:
    num_tasks: T.
    num_specific_experts: m_k, experts owned by each task.
    num_shared_experts: m_s.
    expert_hidden: each expert's layer widths (H = expert_hidden[-1]).
    dropout: drop rate inside the experts.
    final: the last level has no shared gate and no shared output.
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
    """task_x [T, B, D], shared_x [B, D] -> ([T, B, H], [B, H] or None)."""
    t, m_k = self.num_tasks, self.num_specific_experts
    m_s = self.num_shared_experts
    if m_k + m_s == 0:
      raise ConfigError('CGC/PLE: a gate needs at least one expert, got 0 + 0')
    specific = GroupedExpertBank(
      t, m_k, self.expert_hidden, self.dropout, name='specific_experts'
    )(task_x, train=train)  # [T, m_k, B, H]
    shared = ExpertBank(
      m_s, self.expert_hidden, self.dropout, name='shared_experts'
    )(shared_x, train=train)  # [m_s, B, H]

    own = jnp.concatenate(
      [specific, jnp.broadcast_to(shared, (t, *shared.shape))], axis=1
    )  # [T, m_k + m_s, B, H]
    g = Gates(t, m_k + m_s, per_gate_inputs=True, name='task_gates')(task_x)
    self.sow('intermediates', 'gates', g)
    task_out = mix(g, own)
    if self.final:
      return task_out, None

    every = jnp.concatenate(
      [specific.reshape(t * m_k, *specific.shape[2:]), shared], axis=0
    )  # [T*m_k + m_s, B, H]
    g_shared = Gate(t * m_k + m_s, name='shared_gate')(shared_x)
    self.sow('intermediates', 'shared_gate_weights', g_shared)
    return task_out, jnp.einsum('be,ebh->bh', g_shared, every)


def _extract(
  x: jax.Array,
  train: bool,
  *,
  num_tasks: int,
  num_levels: int,
  num_specific_experts: int,
  num_shared_experts: int,
  expert_hidden: tuple[int, ...],
  dropout: float,
) -> jax.Array:
  """Runs the levels in the calling module's scope: x [B, D] -> [T, B, H]."""
  if num_levels < 1:
    raise ConfigError(f'PLE: num_levels must be >= 1, got {num_levels}')
  task_x, shared_x = jnp.broadcast_to(x, (num_tasks, *x.shape)), x
  for j in range(num_levels):
    task_x, shared_x = ExtractionNetwork(
      num_tasks,
      num_specific_experts,
      num_shared_experts,
      expert_hidden,
      dropout,
      final=j == num_levels - 1,
      name=f'level_{j}',
    )(task_x, shared_x, train=train)
  return task_x


class PLE(Backbone):
  """num_levels CGC levels: x [B, D] -> z [T, B, H]; params 'level_{j}'.

  Attributes:
    num_tasks: T.
    num_levels: extraction levels (1 is CGC).
    num_specific_experts: m_k, experts owned by each task, per level.
    num_shared_experts: m_s, shared experts per level.
    expert_hidden: each expert's layer widths (H = expert_hidden[-1]).
    dropout: drop rate inside the experts.
  """

  num_tasks: int
  num_levels: int = 2
  num_specific_experts: int = 3
  num_shared_experts: int = 2
  expert_hidden: tuple[int, ...] = (64,)
  dropout: float = 0.0

  def gradnorm_layer(self) -> tuple[str, ...]:
    """The last level's shared experts' last layer."""
    return dense_kernel(
      f'level_{self.num_levels - 1}',
      'shared_experts',
      'mlp',
      num_layers=len(self.expert_hidden),
    )

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [B, D] -> z [T, B, H]."""
    return _extract(
      x,
      train,
      num_tasks=self.num_tasks,
      num_levels=self.num_levels,
      num_specific_experts=self.num_specific_experts,
      num_shared_experts=self.num_shared_experts,
      expert_hidden=self.expert_hidden,
      dropout=self.dropout,
    )


class CGC(Backbone):
  """Customized Gate Control, PLE's single level: params exactly PLE's with
  num_levels=1 ('level_0'), so the two share checkpoints.

  Attributes:
    num_tasks: T.
    num_specific_experts: m_k, experts owned by each task.
    num_shared_experts: m_s.
    expert_hidden: each expert's layer widths (H = expert_hidden[-1]).
    dropout: drop rate inside the experts.
  """

  num_tasks: int
  num_specific_experts: int = 3
  num_shared_experts: int = 2
  expert_hidden: tuple[int, ...] = (64,)
  dropout: float = 0.0

  def gradnorm_layer(self) -> tuple[str, ...]:
    """The shared experts' last layer."""
    return dense_kernel(
      'level_0', 'shared_experts', 'mlp', num_layers=len(self.expert_hidden)
    )

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [B, D] -> z [T, B, H]."""
    return _extract(
      x,
      train,
      num_tasks=self.num_tasks,
      num_levels=1,
      num_specific_experts=self.num_specific_experts,
      num_shared_experts=self.num_shared_experts,
      expert_hidden=self.expert_hidden,
      dropout=self.dropout,
    )
