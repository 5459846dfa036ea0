"""CAGrad: the best average-loss direction that also improves the worst task.

Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021. With g0 the mean task gradient and g_w = sum w_t g_t,

  w* = argmin over the simplex of  <g_w, g0> + c ||g0|| ||g_w||,
  d  = g0 + (c ||g0|| / ||g_w*||) g_w*,

then d / (1 + c^2) (rescale=1, the default), d / (1 + c) (rescale=2) or d
(rescale=0). This follows the released code (and LibMTL), which uses
c ||g0|| where the paper writes sqrt(c) ||g0||. The official solver is SciPy's
SLSQP; here w = softmax(z) with `num_iterations` Adam steps on z (jit-able,
checked against SLSQP in the tests). Everything is from the Gram matrix.
Scale: d is built from the MEAN gradient; mtl returns T times its
coefficients, so c = 0 gives ones (equal weighting's sum of task gradients).
"""

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import EmptyState, WeightingMethod

RESCALES = (0, 1, 2)


def cagrad(
  c: float = 0.4,
  rescale: int = 1,
  num_iterations: int = 100,
  learning_rate: float = 0.1,
) -> WeightingMethod:
  """CAGrad (Liu et al. 2021) on the backbone gradients.

  Args:
    c: >= 0, the radius of the conflict-averse ball (0: plain averaging).
    rescale: 0, 1 (divide by 1 + c^2) or 2 (divide by 1 + c).
    num_iterations: Adam steps of the inner problem (>= 1).
    learning_rate: Adam's learning rate on the softmax logits (> 0).
  """
  if not c >= 0:
    raise ValueError(f'weighting cagrad: c is {c}, expected >= 0')
  if rescale not in RESCALES:
    raise ValueError(
      f'weighting cagrad: rescale is {rescale!r}, expected 0, 1 or 2'
    )
  if not (isinstance(num_iterations, int) and num_iterations >= 1):
    raise ValueError(
      f'weighting cagrad: num_iterations is {num_iterations!r}, expected an '
      'int >= 1'
    )
  if not learning_rate > 0:
    raise ValueError(
      f'weighting cagrad: learning_rate is {learning_rate}, expected > 0'
    )
  tx = optax.adam(learning_rate)

  def init(num_tasks):
    del num_tasks
    return EmptyState()

  def update(weights, state, *, task_grad_gram, **unused):
    g = gram_lib.weighted(task_grad_gram.astype(jnp.float32), weights)
    t = g.shape[0]
    # Scale-free inner problem; d's coefficients do not depend on it.
    g = g / jnp.maximum(jnp.max(jnp.diag(g)), gram_lib.EPS)
    e = jnp.full((t,), 1.0 / t)
    g0_norm = jnp.sqrt(jnp.maximum(e @ g @ e, 0.0) + 1e-12)
    radius = c * g0_norm

    def objective(z):
      w = jax.nn.softmax(z)
      return w @ g @ e + radius * jnp.sqrt(jnp.maximum(w @ g @ w, 0.0) + 1e-12)

    def body(_, carry):
      z, opt_state = carry
      updates, opt_state = tx.update(jax.grad(objective)(z), opt_state)
      return optax.apply_updates(z, updates), opt_state

    z0 = jnp.zeros((t,))
    z, _ = lax.fori_loop(0, num_iterations, body, (z0, tx.init(z0)))
    w = jax.nn.softmax(z)
    gw_norm = jnp.sqrt(jnp.maximum(w @ g @ w, 0.0) + 1e-12)
    coefficients = e + (radius / gw_norm) * w
    divisor = {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]
    return t * coefficients / divisor * weights, state

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )
