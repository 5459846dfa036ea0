"""Per-task heads: one vmapped tower per task, params stacked [T, ...]."""

import flax.linen as nn
import jax

from mtl.core.layers.mlp import MLP


class Tower(nn.Module):
  """One task's head: MLP then Dense(1): x [B, H] -> logits [B].

  Attributes:
    hidden: the MLP's layer widths (may be ()).
    dropout: drop rate after each hidden layer.
  """

  hidden: tuple[int, ...]
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = MLP(self.hidden, self.dropout, name='mlp')(x, train=train)
    return nn.Dense(1, name='head')(x)[..., 0]


def _call(tower: Tower, z: jax.Array, train: bool) -> jax.Array:
  # Lifted vmap drops keyword arguments, so `train` travels positionally.
  return tower(z, train=train)


class Towers(nn.Module):
  """T towers as one vmapped Tower: z [T, B, H] -> logits [T, B].

  Params 'tower' {'mlp': ..., 'head': ...} stacked [T, ...]: slice t is task
  t's head.

  Attributes:
    num_tasks: T.
    hidden: each tower's hidden widths before its Dense(1).
    dropout: drop rate after each hidden layer.
  """

  num_tasks: int
  hidden: tuple[int, ...]
  dropout: float = 0.0

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
    """z [T, B, H] -> logits [T, B]."""
    tower = Tower(self.hidden, self.dropout, name='tower')
    return nn.vmap(
      _call,
      variable_axes={'params': 0},
      split_rngs={'params': True, 'dropout': True},
      in_axes=(0, None),
      out_axes=0,
      axis_size=self.num_tasks,
    )(tower, z, train)
