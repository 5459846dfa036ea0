"""GradDrop: keep, element by element, the gradients of one sign.

Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign:
Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020,
Algorithm 1. With the per-task gradients g_t of the shared
params, element by element, the Gradient Positive Sign Purity

  P = 1/2 (1 + sum_t g_t / sum_t |g_t|)

is in [0, 1] (1: every task pushes the element up). One uniform draw U per
element, the same for every task, picks a sign: positive where P > U,
negative where P < U; each task keeps the elements of the chosen sign,

  M_t = 1[P > U] 1[g_t > 0] + 1[P < U] 1[g_t < 0],
  M_t <- leak + (1 - leak) M_t,

and the shared group's gradient is sum_t M_t * g_t (element-wise), which is
no linear combination of the g_t with scalar coefficients: the method
returns the vector (`combines_gradients='vector'`). An element where every
g_t is 0 gets P = 1/2 (its masks do not matter). The other groups take the
ordinary weighted sum; the incoming weights w act on the gradients (w_t g_t)
and are the reported weights.

The uniforms of step k are `jax.random.uniform(fold_in(key(seed), k), [P])`:
the same on every device (the gradients are global before the method sees
them) and a pure function of (seed, step).

Differences. The paper applies GradDrop to the gradients at an activation
layer (for a batch, the sign-corrected sum over its rows) and LibMTL only
there (rep_grad=True); mtl applies it to the shared params' gradients,
every param an element, since the train step gives per-task gradients of
the shared params. LibMTL adds 1e-7 to sum_t |g_t|; mtl divides exactly.
The paper's leak may differ per task (1 for a transfer source); here one
leak for every task, LibMTL's and the paper's default 0.
"""

import jax
import jax.numpy as jnp

from mtl.core.weighting.base import (
  VECTOR,
  Combined,
  EmptyState,
  WeightingMethod,
)
from mtl.errors import ConfigError


def sign_purity(g: jnp.ndarray) -> jnp.ndarray:
  """The purity P [P] of the gradients g [T, P]; 1/2 where all are 0."""
  total, mass = jnp.sum(g, axis=0), jnp.sum(jnp.abs(g), axis=0)
  ratio = jnp.where(mass > 0, total / jnp.where(mass > 0, mass, 1.0), 0.0)
  return 0.5 * (1.0 + ratio)


def uniforms(seed: int, step, size: int) -> jnp.ndarray:
  """U [size] of a step: one draw per element."""
  key = jax.random.fold_in(jax.random.key(seed), step)
  return jax.random.uniform(key, (size,), jnp.float32)


def graddrop(leak: float = 0.0, seed: int = 0) -> WeightingMethod:
  """GradDrop (Chen et al. 2020) on the shared params' gradients.

  Args:
    leak: in [0, 1], the part of each gradient kept whatever its sign (0:
      the paper's GradDrop; 1: the plain sum).
    seed: the uniforms of step k come from fold_in(key(seed), k).
  """
  if not 0 <= leak <= 1:
    raise ConfigError(f'weighting graddrop: leak is {leak}, expected in [0, 1]')
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise ConfigError(f'weighting graddrop: seed is {seed!r}, expected an int')

  def init(num_tasks, num_shared_params=None):
    del num_tasks, num_shared_params
    return EmptyState()

  def update(weights, state, *, task_grads, step, **unused):
    g = weights[:, None] * task_grads.astype(jnp.float32)
    purity = sign_purity(g)
    u = uniforms(seed, step, g.shape[1])
    keep = ((purity > u) & (g > 0)) | ((purity < u) & (g < 0))
    mask = leak + (1.0 - leak) * keep.astype(jnp.float32)
    return Combined(weights, jnp.sum(mask * g, axis=0)), state

  return WeightingMethod(
    init, update, frozenset({'task_grads'}), combines_gradients=VECTOR
  )
