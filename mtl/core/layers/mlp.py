"""A plain multi-layer perceptron: Dense -> ReLU -> Dropout per hidden layer."""

import flax.linen as nn
import jax


class MLP(nn.Module):
  """ReLU MLP: x [..., D] -> [..., hidden[-1]] (x itself if hidden is ()).

  Every layer, the last included, is Dense -> ReLU -> Dropout, so an MLP is
  what the papers call an expert or a bottom; a tower adds its own Dense(1).

  Attributes:
    hidden: output width of each layer.
    dropout: drop rate after each ReLU; active only when `train` is True.
  """

  hidden: tuple[int, ...]
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x
