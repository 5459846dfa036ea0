"""MMoE and OMoE: experts mixed by softmax gates.

Ma, Zhao, Yi, Chen, Hong, Chi, "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018. MMoE (Sec. 4.3):
task k reads f^k(x) = sum_e g^k(x)_e f_e(x), g^k(x) = softmax(W_gk x). OMoE
(Sec. 4.2, the one-gate baseline): every task reads the same mixture.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl.core.architectures.base import Backbone, dense_kernel
from mtl.core.layers.experts import ExpertBank, Gate, Gates, mix


class MMoE(Backbone):
  """Expert bank [E, B, H] mixed per task by T gates [T, B, E] -> [T, B, H].

  Params 'experts' (ExpertBank, [E, ...]) and 'task_gates' ({'gate':
  {'kernel': [T, D, E]}}). Sows the gate weights [T, B, E] as intermediates
  'gates'.

  Attributes:
    num_tasks: T.
    num_experts: E.
    expert_hidden: each expert's layer widths (H = expert_hidden[-1]).
    dropout: drop rate inside the experts.
  """

  num_tasks: int
  num_experts: int = 8
  expert_hidden: tuple[int, ...] = (64,)
  dropout: float = 0.0

  def gradnorm_layer(self) -> tuple[str, ...]:
    """The experts' last layer, [E, H_in, H]: all tasks read every expert."""
    return dense_kernel('experts', 'mlp', num_layers=len(self.expert_hidden))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [B, D] -> z [T, B, H]."""
    experts = ExpertBank(
      self.num_experts, self.expert_hidden, self.dropout, name='experts'
    )(x, train=train)
    g = self.gate(x)
    self.sow('intermediates', 'gates', g)
    return mix(g, experts)

  def gate(self, x: jax.Array) -> jax.Array:
    """x [B, D] -> gate weights [T, B, E]."""
    return Gates(self.num_tasks, self.num_experts, name='task_gates')(x)


class OMoE(MMoE):
  """MMoE with one gate shared by all tasks: every z[t] is the same mixture.

  Params 'experts' and 'shared_gate' ({'kernel': [D, E]}). Sows the shared gate
  broadcast to [T, B, E] as intermediates 'gates'.
  """

  def gate(self, x: jax.Array) -> jax.Array:
    g = Gate(self.num_experts, name='shared_gate')(x)
    return jnp.broadcast_to(g, (self.num_tasks, *g.shape))
