"""Nash-MTL: the Nash bargaining solution between the tasks' gradients.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task
Learning as a Bargaining Game", ICML 2022. The update is sum_t alpha_t g_t
with alpha > 0 solving

  G alpha = 1 / alpha    (elementwise),

G the Gram matrix normalised by its Frobenius norm as in the released code
(alpha then weighs the unnormalised gradients, as there). The official code
solves a sequence of convex approximations with cvxpy; here the same point is
the minimiser of the strictly convex f(alpha) = 0.5 alpha^T G alpha -
sum log alpha_t, found by damped Newton steps (step 1 / (1 + lambda), lambda
the Newton decrement: f is self-concordant, so every iterate stays positive
and the iteration converges), warm-started from the previous solution like
the official code. A tiny ridge on G keeps a task with a zero gradient finite.
`update_every` > 1 re-solves only every k steps and reuses alpha in between,
as the official `update_weights_every`.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import WeightingMethod


class NashState(NamedTuple):
  alpha: jnp.ndarray  # [T] the last solution (warm start)


def nash_mtl(
  num_iterations: int = 20, update_every: int = 1, ridge: float = 1e-6
) -> WeightingMethod:
  """Nash-MTL (Navon et al. 2022) on the backbone gradients.

  Args:
    num_iterations: damped Newton steps per solve (>= 1).
    update_every: solve every this many steps (>= 1), reuse alpha between.
    ridge: > 0, added to the normalised Gram's diagonal.
  """
  for name, value in (
    ('num_iterations', num_iterations),
    ('update_every', update_every),
  ):
    if not (isinstance(value, int) and value >= 1):
      raise ValueError(
        f'weighting nash_mtl: {name} is {value!r}, expected an int >= 1'
      )
  if not ridge > 0:
    raise ValueError(f'weighting nash_mtl: ridge is {ridge}, expected > 0')

  def init(num_tasks):
    return NashState(jnp.ones((num_tasks,), jnp.float32))

  def solve(g, alpha):
    t = g.shape[0]
    g = g / jnp.maximum(jnp.linalg.norm(g), gram_lib.EPS)
    g = g + ridge * jnp.eye(t)

    def body(_, a):
      grad = g @ a - 1.0 / a
      hess = g + jnp.diag(1.0 / a**2)
      step = jnp.linalg.solve(hess, grad)
      decrement = jnp.sqrt(jnp.maximum(grad @ step, 0.0))
      return a - step / (1.0 + decrement)

    start = jnp.where(jnp.isfinite(alpha).all() & (alpha > 0).all(), alpha, 1.0)
    return lax.fori_loop(0, num_iterations, body, start)

  def update(weights, state, *, task_grad_gram, step, **unused):
    g = gram_lib.weighted(task_grad_gram.astype(jnp.float32), weights)
    alpha = lax.cond(
      step % update_every == 0,
      lambda: solve(g, state.alpha),
      lambda: state.alpha,
    )
    return alpha * weights, NashState(alpha)

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )
