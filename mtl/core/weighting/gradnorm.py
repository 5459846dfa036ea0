"""GradNorm: weights that equalise the tasks' training rates.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018, Algorithm 1.
On W, the kernel of the last shared layer (`mtl.core.task_grads`), with the
current weights w:

  G_i    = w_i * ||dL_i/dW||             (the step gives the unweighted norms)
  Gbar   = mean_i G_i
  r_i    = (L_i / L_i(0)) / mean_j (L_j / L_j(0))     relative inverse rate
  L_grad = sum_i | G_i - stop_gradient(Gbar * r_i ** alpha) |

Only w is updated by L_grad, with its own optimizer, then clipped at
`min_weight` and renormalised to sum T. dL_grad/dw_i = +-||dL_i/dW||, whose
scale is the model's: with plain gradient descent (Algorithm 1 literally,
`optimizer='sgd'`) a learning rate means something different on every model
(measured on the paper's toy problem: lr 0.025 moved the weights a third of
the way in 3000 steps, lr 0.1 oscillated between the extremes). Adam (the
default) makes the step scale-free, and lr 0.025 (the paper's) balances the
toy in a few hundred steps.
The returned weights are w(t), used for this step's model gradient; the state
holds w(t+1), as in Algorithm 1. L_i(0) is the loss of the first step the
method sees unless `initial_losses` gives it (e.g. log 2 for a balanced binary
task, a theoretical initial loss). The weights multiply the incoming weights.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl.core.weighting.base import WeightingMethod, check_num_tasks
from mtl.errors import ConfigError

OPTIMIZERS = {'sgd': optax.sgd, 'adam': optax.adam}


class GradNormState(NamedTuple):
  weights: jnp.ndarray  # w [T], summing to T
  initial_losses: jnp.ndarray  # L(0) [T]
  seen: jnp.ndarray  # bool: L(0) is set
  opt_state: Any


def gradnorm(
  alpha: float = 1.5,
  learning_rate: float = 0.025,
  optimizer: str = 'adam',
  initial_losses: Sequence[float] | None = None,
  min_weight: float = 1e-3,
) -> WeightingMethod:
  """GradNorm (Chen et al. 2018), Algorithm 1.

  Args:
    alpha: restoring-force strength (>= 0): 0 pushes towards equal gradient
      norms, larger values favour tasks that train slower. 0.12 on the
      paper's toy problem, 1.5 on NYUv2.
    learning_rate: of the weights' optimizer (> 0).
    optimizer: 'adam' (default, scale-free) or 'sgd' (Algorithm 1's
      gradient descent).
    initial_losses: L_i(0) per task; None takes the first step's losses.
    min_weight: weights are clipped at this (> 0) before renormalising, so
      they stay positive.
  """
  if not alpha >= 0:
    raise ConfigError(f'weighting gradnorm: alpha is {alpha}, expected >= 0')
  if not learning_rate > 0:
    raise ConfigError(
      f'weighting gradnorm: learning_rate is {learning_rate}, expected > 0'
    )
  if optimizer not in OPTIMIZERS:
    raise ConfigError(
      f'weighting gradnorm: optimizer is {optimizer!r}, expected one of '
      f'{", ".join(OPTIMIZERS)}'
    )
  if not min_weight > 0:
    raise ConfigError(
      f'weighting gradnorm: min_weight is {min_weight}, expected > 0'
    )
  if initial_losses is not None and any(
    not float(x) > 0 for x in initial_losses
  ):
    raise ConfigError(
      f'weighting gradnorm: initial_losses {list(initial_losses)} must all '
      'be > 0'
    )
  tx = OPTIMIZERS[optimizer](learning_rate)

  def init(num_tasks):
    check_num_tasks('gradnorm', initial_losses, num_tasks, 'initial_losses')
    w = jnp.ones((num_tasks,), jnp.float32)
    given = initial_losses is not None
    l0 = (
      jnp.asarray(initial_losses, jnp.float32)
      if given
      else jnp.ones((num_tasks,), jnp.float32)
    )
    return GradNormState(w, l0, jnp.asarray(given), tx.init(w))

  def update(weights, state, *, losses, task_grad_norms, **unused):
    t = state.weights.shape[0]
    losses = jax.lax.stop_gradient(losses.astype(jnp.float32))
    norms = jax.lax.stop_gradient(task_grad_norms.astype(jnp.float32))
    l0 = jnp.where(state.seen, state.initial_losses, losses)
    ratio = losses / jnp.maximum(l0, 1e-12)
    r = ratio / jnp.maximum(jnp.mean(ratio), 1e-12)

    def l_grad(w):
      g = w * norms
      target = jax.lax.stop_gradient(jnp.mean(g) * r**alpha)
      return jnp.sum(jnp.abs(g - target))

    w = state.weights
    updates, opt_state = tx.update(jax.grad(l_grad)(w), state.opt_state, w)
    new_w = jnp.maximum(optax.apply_updates(w, updates), min_weight)
    new_w = new_w * (t / jnp.sum(new_w))
    # A step with non-finite inputs leaves the weights as they were.
    ok = jnp.isfinite(new_w).all()
    new_w = jnp.where(ok, new_w, w)
    new_state = GradNormState(new_w, l0, jnp.asarray(True), opt_state)
    return weights * w, new_state

  return WeightingMethod(init, update, frozenset({'task_grad_norms'}))
