"""STEM-Net: shared and task-specific embeddings, all-forward gating.

Su, Pan, Wang, Xiao, Quan, Chen, Jiang, "STEM: Unleashing the Power of
Embeddings for Multi-task Recommendation", AAAI 2024 (arXiv 2308.13537),
Sec. 3 and Fig. 2. Equations as implemented, numbered in this docstring;
T tasks, m_k experts per task, m_s shared experts:

  (1) Shared and task-specific embeddings (STEM): every feature has T + 1
      embeddings; v^t = E^t(x) for task t and v^S = E^S(x), the shared one.
      The model gives x [T + 1, B, D] (`shared_inputs = 1`): slice t is v^t
      from task t's table set, slice T is v^S from the shared set.
  (2) Experts: task t's expert group reads its own embedding, f^t_k =
      MLP^t_k(v^t); the shared group reads the shared one, f^S_k =
      MLP^S_k(v^S).
  (3) Gate of task t, over all T * m_k + m_s experts:
      g^t = softmax(W^t (v^t + v^S)).
  (4) All Forward, Task-specific Backward: task t mixes every expert, its
      own, the shared ones AND the other tasks', with a stop-gradient sg on
      the other tasks' experts:
        h^t = sum_k g^t_{t,k} f^t_k + sum_{s != t} sum_k g^t_{s,k} sg(f^s_k)
              + sum_k g^t_{S,k} f^S_k,
      and the tower of task t reads h^t. So task t's loss reaches E^t, E^S,
      its own and the shared experts and its gate, and never E^s or the
      experts of another task s: each task-specific table learns from its
      own task only, while the forward pass transfers across tasks.

Choices, named: one gated layer (the authors' default depth; no shared gate,
which only a deeper stack would read); the gate is linear as MMoE's and
PLE's (`layers.experts.Gate`); its input is the sum v^t + v^S, as the
authors' implementation has it; the gate itself is not stopped, so task t's
gate learns how much of another task's (frozen-for-it) experts to read.

Params:
  specific_experts  GroupedExpertBank, stacked [T, m_k, ...]
  shared_experts    ExpertBank, stacked [m_s, ...] (absent when m_s = 0)
  task_gates        Gates, {'gate': {'kernel': [T, D, T * m_k + m_s]}}
Gate columns list the experts in the order [task 0's..., task T-1's...,
shared...]. Sows the gate weights [T, B, T * m_k + m_s] as intermediates
'gates'.
"""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl.core.architectures.base import Backbone, dense_kernel
from mtl.core.layers.experts import (
  ExpertBank,
  Gates,
  GroupedExpertBank,
  mix,
)
from mtl.errors import ConfigError


def all_forward(specific: jax.Array, shared: jax.Array) -> jax.Array:
  """Eq. (4)'s experts as each task reads them: specific [T, m_k, B, H] and
  shared [m_s, B, H] -> [T, T * m_k + m_s, B, H], row t holding task t's
  own experts as they are, every other task's under stop_gradient, then
  the shared ones."""
  t, m_k = specific.shape[:2]
  own = jnp.eye(t, dtype=bool)[:, :, None, None, None]  # [reader, owner]
  seen = jnp.where(own, specific[None], jax.lax.stop_gradient(specific)[None])
  seen = seen.reshape(t, t * m_k, *specific.shape[2:])
  return jnp.concatenate(
    [seen, jnp.broadcast_to(shared, (t, *shared.shape))], axis=1
  )


class STEM(Backbone):
  """STEM-Net's layer: x [T + 1, B, D] -> z [T, B, H] (module docstring).

  Attributes:
    num_tasks: T.
    num_specific_experts: m_k >= 1, experts owned by each task.
    num_shared_experts: m_s >= 0, experts on the shared embedding.
    expert_hidden: each expert's layer widths (H = expert_hidden[-1]).
    dropout: drop rate inside the experts.
  """

  # T task-specific embedding table sets, then one shared set.
  per_task_inputs: ClassVar[bool] = True
  shared_inputs: ClassVar[int] = 1

  num_tasks: int
  num_specific_experts: int = 1
  num_shared_experts: int = 1
  expert_hidden: tuple[int, ...] = (64,)
  dropout: float = 0.0

  def gradnorm_layer(self) -> tuple[str, ...] | None:
    """The shared experts' last layer (every task reads it, unstopped), or
    None without shared experts."""
    if self.num_shared_experts < 1:
      return None
    return dense_kernel(
      'shared_experts', 'mlp', num_layers=len(self.expert_hidden)
    )

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [T + 1, B, D] (slice T: the shared embedding) -> z [T, B, H]."""
    t, m_k = self.num_tasks, self.num_specific_experts
    m_s = self.num_shared_experts
    if m_k < 1 or m_s < 0:
      raise ConfigError(
        f'STEM: num_specific_experts is {m_k} and num_shared_experts is '
        f'{m_s}, expected >= 1 and >= 0'
      )
    if x.ndim != 3 or x.shape[0] != t + 1:
      raise ValueError(
        f'STEM takes x [T + 1, B, D] = [{t + 1}, B, D], got {x.shape}'
      )
    task_x, shared_x = x[:t], x[t]
    specific = GroupedExpertBank(
      t, m_k, self.expert_hidden, self.dropout, name='specific_experts'
    )(task_x, train=train)  # [T, m_k, B, H], eq. (2)
    shared = ExpertBank(
      m_s, self.expert_hidden, self.dropout, name='shared_experts'
    )(shared_x, train=train)  # [m_s, B, H], eq. (2)
    g = Gates(t, t * m_k + m_s, per_gate_inputs=True, name='task_gates')(
      task_x + shared_x
    )  # [T, B, T * m_k + m_s], eq. (3)
    self.sow('intermediates', 'gates', g)
    return mix(g, all_forward(specific, shared))  # eq. (4)
