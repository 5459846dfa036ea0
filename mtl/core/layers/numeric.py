"""Periodic embeddings of the dense (numeric) columns: PLR.

Gorishniy, Rubachev & Babenko, "On Embeddings for Numerical Features in
Tabular Deep Learning", NeurIPS 2022. Each dense column f gets its own
trained frequencies c_f [k] and linear map; for a value x of column f
(Sec. 3.3, periodic activations, then Linear and ReLU: their "PLR"):

  v_f(x) = 2 pi c_f x                                         [k]
  p_f(x) = concat(sin(v_f(x)), cos(v_f(x)))                   [2k]
  e_f(x) = ReLU(W_f p_f(x) + b_f)                             [d]

with c_f ~ N(0, sigma^2) at init (sigma the scale of the frequencies, the
one hyper-parameter the paper tunes; their Sec. 3.3: "the choice of sigma
is important") and W_f [2k, d], b_f [d] trained. The embedded row
[B, F * d] (column f's d values side by side, in column order) replaces
the raw dense [B, F] in front of the sparse embeddings, so every backbone
sees it unchanged; the wide part keeps the raw values.

A multilayer perceptron is smooth in its inputs and fits a step in a
numeric column (the thresholds a tree splits on, e.g. capital gains above
a level) only with many units; sin and cos features of several
frequencies give it such shapes at once, which is why PLR closes much of
the gap between MLPs and gradient-boosted trees on the paper's tables.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl.errors import ConfigError

EMBEDDINGS = ('none', 'periodic')


class PeriodicEmbedding(nn.Module):
  """dense [B, F] -> [B, F * dim] (module docstring).

  Attributes:
    frequencies: k, frequencies per column.
    dim: d, the width of each column's embedding.
    sigma: the standard deviation of the frequencies at init.
  """

  frequencies: int = 16
  dim: int = 8
  sigma: float = 0.1

  @nn.compact
  def __call__(self, dense: jax.Array) -> jax.Array:
    dense = jnp.asarray(dense, jnp.float32)
    num = dense.shape[-1]
    sigma = self.sigma

    def normal(key, shape):
      return sigma * jax.random.normal(key, shape, jnp.float32)

    c = self.param('frequencies', normal, (num, self.frequencies))
    w = self.param(
      'kernel',
      nn.initializers.lecun_normal(batch_axis=(0,)),
      (num, 2 * self.frequencies, self.dim),
      jnp.float32,
    )
    b = self.param('bias', nn.initializers.zeros, (num, self.dim), jnp.float32)
    v = 2 * jnp.pi * c * dense[..., None]  # [B, F, k]
    p = jnp.concatenate([jnp.sin(v), jnp.cos(v)], axis=-1)  # [B, F, 2k]
    e = jax.nn.relu(jnp.einsum('...fk,fkd->...fd', p, w) + b)  # [B, F, d]
    return e.reshape(*dense.shape[:-1], num * self.dim)


# The config's `numeric` section: the embedding's name and its keywords.
DEFAULTS = {
  'embedding': 'none',
  **{
    f.name: f.default
    for f in dataclasses.fields(PeriodicEmbedding)
    if f.name in ('frequencies', 'dim', 'sigma')
  },
}


def check(numeric: dict, model_name: str, input_layout, per_task_inputs):
  """One-line ConfigErrors for the values of a complete `numeric` section
  and its architecture (two towers split the raw columns by feature; a
  per-task-inputs model shares no parameter between its tasks)."""
  name = numeric['embedding']
  if name not in EMBEDDINGS:
    raise ConfigError(
      f'numeric.embedding is {name!r}, expected one of {", ".join(EMBEDDINGS)}'
    )
  if name == 'none':
    return
  for key in ('frequencies', 'dim'):
    value = numeric[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f'numeric.{key} is {value!r}, expected an int >= 1')
  sigma = numeric['sigma']
  if isinstance(sigma, bool) or not (
    isinstance(sigma, (int, float)) and 0 < sigma < float('inf')
  ):
    raise ConfigError(f'numeric.sigma is {sigma!r}, expected a float > 0')
  if input_layout or per_task_inputs:
    why = (
      'two towers split the raw columns by feature'
      if input_layout
      else 'its tasks share no parameter'
    )
    raise ConfigError(
      f'numeric.embedding is {name!r} with model {model_name!r}, expected '
      f"'none': {why}"
    )
