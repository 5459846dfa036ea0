"""Shared-Bottom: one network shared by all tasks, a tower per task on top.

Caruana, "Multitask Learning", Machine Learning 28, 1997 (hard parameter
sharing); the Shared-Bottom baseline of Ma et al., KDD 2018, Sec. 4.1.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl.core.architectures.base import Backbone, dense_kernel
from mtl.core.layers.mlp import MLP


class SharedBottom(Backbone):
  """One MLP whose output every task reads: x [B, D] -> z [T, B, H].

  Params 'mlp'.

  Attributes:
    num_tasks: T.
    hidden: the shared network's layer widths (H = hidden[-1]).
    dropout: drop rate after each hidden layer.
  """

  num_tasks: int
  hidden: tuple[int, ...] = (128, 64)
  dropout: float = 0.0

  def gradnorm_layer(self) -> tuple[str, ...]:
    return dense_kernel('mlp', num_layers=len(self.hidden))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [B, D] -> z [T, B, H], the same [B, H] for every task."""
    h = MLP(self.hidden, self.dropout, name='mlp')(x, train=train)
    return jnp.broadcast_to(h, (self.num_tasks, *h.shape))
