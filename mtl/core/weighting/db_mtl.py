"""DB-MTL: log losses, and every task's gradient scaled to the largest.

Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang & Kwok, "Dual-Balancing for
Multi-Task Learning", arXiv 2308.12029 (2023), Algorithm 1. Two
balancings:

- loss scale: each task trains on log(L_t + eps) (eps = 1e-8, as in LibMTL),
  whose gradient is g_t / (L_t + eps), g_t the gradient of L_t;
- gradient magnitude: an exponential moving average of each task's
  log-loss gradient, at the rate beta_k of step k of the authors' LibMTL
  code (beta_sigma = 0, its default, keeps it constant),

    g_hat_t <- beta_k g_hat_t + (1 - beta_k) g_t / (L_t + eps),
    beta_k = beta / k^beta_sigma   (k = 1, 2, ...; g_hat_t = 0 before),

  and the shared params step along

    d = alpha_k sum_t g_hat_t / ||g_hat_t||,  alpha_k = max_s ||g_hat_s||,

  i.e. every task's estimate scaled to the largest norm (alpha_t =
  max_s ||g_hat_s|| / ||g_hat_t|| in LibMTL's form).

d is no combination of this step's gradients (the averages hold past
steps'), so the method returns the vector (`combines_gradients='vector'`)
and keeps the averages [T, P] in its state. The other groups (towers,
embeddings beside a backbone) train on the log losses too, as in the
authors' code: their weights, and the reported weights, are w_t / (L_t +
eps), w the incoming weights (which scale the log losses; the scaling to
the largest norm then undoes them in d, except a zero weight). A task whose
average is 0 (a zero gradient from the start) adds nothing to d.

Hyper-parameters: beta = 0.9 and beta_sigma = 0, LibMTL's defaults for
DB-MTL; beta_sigma > 0 decays the rate. LibMTL adds 1e-8 to ||g_hat_t|| in
alpha_t; mtl divides exactly.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl.core.weighting.base import VECTOR, Combined, WeightingMethod
from mtl.errors import ConfigError

# Added to the losses before the log, as in the authors' code.
EPS = 1e-8


class DBMTLState(NamedTuple):
  averages: jnp.ndarray  # g_hat [T, P]
  count: jnp.ndarray  # int32: updates taken (k of the last one)


def scaled_to_largest(averages: jnp.ndarray) -> jnp.ndarray:
  """alpha_k sum_t g_hat_t / ||g_hat_t|| of the averages [T, P]."""
  norms = jnp.sqrt(jnp.sum(jnp.square(averages), axis=1))
  live = norms > 0
  alpha = jnp.where(live, jnp.max(norms) / jnp.where(live, norms, 1.0), 0.0)
  return alpha @ averages


def db_mtl(beta: float = 0.9, beta_sigma: float = 0.0) -> WeightingMethod:
  """DB-MTL (Lin et al. 2023) on the shared params' gradients.

  Args:
    beta: the moving average's rate, in [0, 1) (0: this step's gradients
      alone).
    beta_sigma: >= 0, the decay of the rate, beta / k^beta_sigma at step k
      (0: constant).
  """
  if not 0 <= beta < 1:
    raise ConfigError(f'weighting db_mtl: beta is {beta}, expected in [0, 1)')
  if not beta_sigma >= 0:
    raise ConfigError(
      f'weighting db_mtl: beta_sigma is {beta_sigma}, expected >= 0'
    )

  def init(num_tasks, num_shared_params=None):
    size = 0 if num_shared_params is None else num_shared_params
    return DBMTLState(
      jnp.zeros((num_tasks, size), jnp.float32), jnp.zeros((), jnp.int32)
    )

  def update(weights, state, *, task_grads, losses, **unused):
    losses = jax.lax.stop_gradient(losses.astype(jnp.float32))
    scale = weights / (losses + EPS)  # d w_t log(L_t + eps) / d L_t
    g = scale[:, None] * task_grads.astype(jnp.float32)
    count = state.count + 1
    rate = beta / count.astype(jnp.float32) ** beta_sigma
    averages = g + rate * (state.averages - g)
    new_state = DBMTLState(averages, count)
    return Combined(scale, scaled_to_largest(averages)), new_state

  return WeightingMethod(
    init, update, frozenset({'task_grads'}), combines_gradients=VECTOR
  )
