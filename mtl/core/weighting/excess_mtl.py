"""ExcessMTL: weights raised by each task's estimated excess risk.

He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi & Zhao, "Robust Multi-Task
Learning with Excess Risks", ICML 2024, Algorithm 1. The task weights alpha
(on the simplex, from 1/T) follow exponentiated gradient ascent on the
tasks' excess risks E_t = L_t(theta) - L_t(theta_t*), the distance of each
task to its own optimum, rather than on the losses (which a noisy task's
Bayes error keeps high). At step k (k = 1, 2, ...), g_t the task's
stochastic gradient of the shared params:

  G_t   <- G_t + g_t * g_t                 (accumulated squared gradients)
  H_t    = diag(sqrt(G_t + eps))           (AdaGrad's diagonal curvature)
  e_t    = g_t^T H_t^-1 g_t                (second-order Taylor estimate
                                            of E_t; Newton's step H^-1 g)
  r_t    = e_t / e_t(1)                    (scale normalisation)
  alpha <- alpha * exp(eta r) / sum_s alpha_s exp(eta r_s),

and the model steps along sum_t alpha_t g_t with the updated alpha. The
normalisation by the first step's estimate makes the excess risks of tasks
of different loss scales comparable (and cancels any constant factor of the
estimate, such as the Taylor expansion's 1/2); at k = 1 every r_t is 1 (0
for a task whose first estimate is 0, below), so the first update leaves
alpha at 1/T unless a task's gradient is zero at step 1.

Choices, each named:
- G_t, e_t and the first estimate e_t(1) are those of the shared params'
  gradients (`task_grads`: reduced over devices, so 8 devices equal one).
- eps = 1e-7 inside the square root, as in the authors' code (also
  LibMTL's); with eps = 0 a coordinate whose G is 0 (its gradient has been
  0 throughout) adds 0.
- A task whose first estimate is 0 (a zero gradient at step 1) has r_t = 0
  from then on: it had no distance to its optimum to scale by, and keeps
  the weight the others' updates leave it.
- The normalisation takes the first step's estimates, as the authors'
  code and LibMTL do (an average over a warm-up period is not offered).
- Scale: the paper's alpha sums to 1; mtl returns T alpha (equal tasks
  give all ones, `equal`'s step size), the authors' code's scale, as `famo`
  and `rlw` do. The weights multiply the incoming weights.
- The state keeps log alpha, shifted to a maximum of 0 (the same alpha
  after the normalisation): alpha_t exp(eta r_t) neither overflows nor
  underflows to a 0 it could not leave. A weight below float32's range
  (~1e-38: log alpha_t below about -87, eta times the sum over the steps
  of r_max - r_t, e.g. at eta = 1 a task whose gradients grew 100-fold
  against the others') is returned as 0; its log stays in the state.

Hyper-parameters: step_size eta = 1e-2 (the authors' code's default
`robust_step_size`, also LibMTL's), eps = 1e-7.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl.core.weighting.base import WeightingMethod
from mtl.errors import ConfigError


class ExcessMTLState(NamedTuple):
  squares: jnp.ndarray  # G [T, P], the accumulated squared gradients
  first: jnp.ndarray  # e(1) [T], the first step's estimates
  logits: jnp.ndarray  # [T] log alpha, shifted to a maximum of 0
  count: jnp.ndarray  # int32: updates taken (k of the last one)


def alphas(state: ExcessMTLState) -> jnp.ndarray:
  """The weights alpha [T] on the simplex of a state."""
  return jax.nn.softmax(state.logits)


def excess_risks(task_grads, squares, eps: float) -> jnp.ndarray:
  """e_t = g_t^T diag(sqrt(G_t + eps))^-1 g_t [T] (0 where G + eps is 0)."""
  h = jnp.sqrt(squares + eps)
  live = h > 0
  inverse = jnp.where(live, 1.0 / jnp.where(live, h, 1.0), 0.0)
  return jnp.sum(jnp.square(task_grads) * inverse, axis=1)


def excess_mtl(step_size: float = 1e-2, eps: float = 1e-7) -> WeightingMethod:
  """ExcessMTL (He et al. 2024) on the shared params' gradients.

  Args:
    step_size: eta > 0, the exponentiated gradient's step on the normalised
      excess risks.
    eps: >= 0, added to the accumulated squared gradients under the square
      root.
  """
  name = 'weighting excess_mtl'
  if not step_size > 0:
    raise ConfigError(f'{name}: step_size is {step_size}, expected > 0')
  if not eps >= 0:
    raise ConfigError(f'{name}: eps is {eps}, expected >= 0')

  def init(num_tasks, num_shared_params=None):
    size = 0 if num_shared_params is None else num_shared_params
    return ExcessMTLState(
      jnp.zeros((num_tasks, size), jnp.float32),
      jnp.zeros((num_tasks,), jnp.float32),
      jnp.zeros((num_tasks,), jnp.float32),
      jnp.zeros((), jnp.int32),
    )

  def update(weights, state, *, task_grads, **unused):
    g = task_grads.astype(jnp.float32)
    squares = state.squares + jnp.square(g)
    e = excess_risks(g, squares, eps)
    count = state.count + 1
    first = jnp.where(count == 1, e, state.first)
    live = first > 0
    r = jnp.where(live, e / jnp.where(live, first, 1.0), 0.0)
    logits = state.logits + step_size * r
    logits = logits - jnp.max(logits)
    new_state = ExcessMTLState(squares, first, logits, count)
    return weights * (logits.shape[0] * alphas(new_state)), new_state

  return WeightingMethod(init, update, frozenset({'task_grads'}))
