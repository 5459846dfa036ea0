"""FAMO: weights that make every task's log-loss fall at the same rate.

Liu, Feng, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization",
NeurIPS 2023, Algorithm 1 (Algorithm 2 of their appendix: the practical form
with Adam). Logits xi [T] in the state give z = softmax(xi); the model step
is along

  d = sum_t c z_t grad log L_t = sum_t (c z_t / L_t) grad L_t,
  c = (sum_t z_t / L_t)^-1,

so the loss weights are c z_t / L_t (a convex combination of the gradients of
the log-losses). After the step the logits follow the decrease of the
log-losses, delta_t = log L_t(before) - log L_t(after):

  xi <- xi - beta (J_z(xi)^T delta + gamma xi),   J_z^T delta = z * (delta -
                                                   <z, delta>),

with Adam of learning rate beta (`learning_rate`, their 0.025) on the
gradient J_z^T delta + gamma xi (PyTorch Adam's L2 `weight_decay` gamma; the
authors' code defaults to 0.01, LibMTL to 1e-3). Their code also adds 1e-8
to the losses (kept here) and subtracts optional per-task minimum losses
(zero by default; not offered).

When delta is measured. Their code computes delta on the SAME batch: after
the parameter step it runs a second forward pass on the batch and compares
the losses before and after. mtl's step is one pure function with one
forward pass, so at step k it takes delta = log L(theta_{k-1}; batch_{k-1})
- log L(theta_k; batch_k): the previous step's losses (kept in the state)
against this step's, updates xi with it, and then weighs this step with the
updated z. The sequence of xi is theirs (xi_k has seen the effect of every
update before step k). The difference is what delta measures: theirs the
decrease on the batch just trained on, mtl's the change between two losses
on batches their parameters had not yet been trained on (theta_{k-1} on
batch_{k-1}, theta_k on batch_k), so it also carries the change of batch
(noisier). Why: no second forward pass per step (about a third of a step's
cost), and the step stays one pure function of (state, batch). The first
step has no previous loss and leaves xi at 0.

Scale: the paper's weights sum to 1; mtl returns T times them (equal losses
and logits give all ones, `equal`'s step size), as `rlw` does. The weights
multiply the incoming weights. Their gradient clipping (max_norm 1) is the
optimizer's in mtl (`optimizer.grad_clip_norm`), not this method's.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl.core.weighting.base import WeightingMethod
from mtl.errors import ConfigError

# Added to the losses before the log and the division, as in their code.
EPS = 1e-8
# PyTorch Adam's defaults, the authors' optimizer of the logits.
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


class FAMOState(NamedTuple):
  logits: jnp.ndarray  # xi [T]
  previous: jnp.ndarray  # [T] L + EPS of the previous step
  seen: jnp.ndarray  # bool: `previous` holds a step's losses
  m: jnp.ndarray  # [T] Adam's first moment
  v: jnp.ndarray  # [T] Adam's second moment
  count: jnp.ndarray  # int32: Adam steps taken


def famo(learning_rate: float = 0.025, weight_decay: float = 0.01):
  """FAMO (Liu et al. 2023), the logits updated from step to step.

  Args:
    learning_rate: beta, Adam's learning rate of the logits (> 0).
    weight_decay: gamma >= 0, the L2 pull of the logits towards 0 (their
      code's default 0.01).
  """
  if not weight_decay >= 0:
    raise ConfigError(
      f'weighting famo: weight_decay is {weight_decay}, expected >= 0'
    )
  if not learning_rate > 0:
    raise ConfigError(
      f'weighting famo: learning_rate is {learning_rate}, expected > 0'
    )

  def init(num_tasks):
    def zeros():  # distinct buffers: a donated state holds each once
      return jnp.zeros((num_tasks,), jnp.float32)

    ones = jnp.ones((num_tasks,), jnp.float32)
    count = jnp.zeros((), jnp.int32)
    return FAMOState(zeros(), ones, jnp.asarray(False), zeros(), zeros(), count)

  def adam(state, grad):
    """PyTorch's Adam with L2 weight decay. Written out because the bias
    corrections 1 - beta^k must be accurate: optax rounds beta2 = 0.999 to
    float32 before 1 - beta2^k, 1.3e-5 off at k = 1, which moved the logits
    by ~1e-5 over 20 steps against PyTorch's float64 corrections."""
    xi = state.logits
    grad = grad + weight_decay * xi
    count = state.count + 1
    m = BETA1 * state.m + (1 - BETA1) * grad
    v = BETA2 * state.v + (1 - BETA2) * grad**2
    k = count.astype(jnp.float32)
    correction1 = -jnp.expm1(k * math.log(BETA1))  # 1 - BETA1^k
    correction2 = -jnp.expm1(k * math.log(BETA2))
    denominator = jnp.sqrt(v) / jnp.sqrt(correction2) + ADAM_EPS
    return xi - learning_rate / correction1 * m / denominator, m, v, count

  def update(weights, state, *, losses, **unused):
    losses = jax.lax.stop_gradient(losses.astype(jnp.float32)) + EPS
    # log(previous) - log(L) as log1p of the relative change: the difference
    # of two logs would lose the small decrease to cancellation in float32.
    previous = jnp.where(state.seen, state.previous, losses)
    delta = jnp.log1p((previous - losses) / losses)
    z = jax.nn.softmax(state.logits)
    grad = z * (delta - jnp.dot(z, delta))  # J_z(xi)^T delta
    stepped = adam(state, grad)
    kept = (state.logits, state.m, state.v, state.count)
    xi, m, v, count = (
      jnp.where(state.seen, new, old)
      for new, old in zip(stepped, kept, strict=True)
    )
    z = jax.nn.softmax(xi)
    q = z / losses
    t = weights.shape[0]
    w = t * q / jnp.sum(q)
    new_state = FAMOState(xi, losses, jnp.asarray(True), m, v, count)
    return weights * w, new_state

  return WeightingMethod(init, update)
