"""Single-Task baseline: T fully separate networks, one per task.

The "Single-Task" rows of Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018 (Tables 1-2), and of
Tang et al., "Progressive Layered Extraction (PLE)", RecSys 2020 (Table 5).
No parameter is shared between tasks, embeddings included: the model gives
this backbone per-task inputs from T separate embedding tables.
"""

from typing import ClassVar

import flax.linen as nn
import jax

from mtl.core.architectures.base import Backbone
from mtl.core.layers.experts import ExpertBank


class SingleTask(Backbone):
  """T separate MLPs as one vmapped bank: x [T, B, D] -> z [T, B, H].

  Params 'networks' {'mlp': ...} stacked [T, ...]: slice t is task t's own
  network.

  Attributes:
    num_tasks: T.
    hidden: each task network's layer widths (H = hidden[-1]).
    dropout: drop rate after each hidden layer.
  """

  # MultiTaskModel gives this backbone x [T, B, D] from T embedding tables.
  per_task_inputs: ClassVar[bool] = True

  num_tasks: int
  hidden: tuple[int, ...] = (128, 64)
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [T, B, D] -> z [T, B, H]."""
    networks = ExpertBank(
      self.num_tasks,
      self.hidden,
      self.dropout,
      per_expert_inputs=True,
      name='networks',
    )
    return networks(x, train=train)
