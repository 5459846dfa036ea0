"""MoDo: weights stepped on two independent samples, the model on a third.

Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective
Learning: Optimization, Generalization and Conflict-Avoidance", NeurIPS
2023, Algorithm 1 (multi-objective gradient with double sampling). With
G_k [T, P] the task gradients of the shared params on the independent
samples z_1, z_2, z_3 of step t (rows g_t),

  lambda <- Pi_simplex(lambda - gamma (G_1 G_2^T + rho I) lambda),
  d       = sum_t lambda_t g_t(z_3)  = G_3^T lambda,

from lambda = 1/T. G_1 G_2^T lambda is an unbiased estimate of the
gradient of lambda^T G G^T lambda / 2 (the MGDA objective) because the two
samples are independent: one sample's G G^T would be biased by its
variance. The samples are the three parts of the step's global batch
(`task_grads_parts`, `mtl.core.batch_parts`: the rows k mod 3 of the
global batch, each part's loss its own mean; the same on one device and on
several). d uses a third of the batch, as in the paper (its step on
z_3 only); it is no combination of the full batch's gradients, so the
method returns the vector (`combines_gradients='vector'`) and keeps lambda
in its state.

The incoming weights w act on the gradients (g_t -> w_t g_t in every G_k);
the other groups (towers) take the ordinary weighted sum with them over the
whole batch, and they are the reported weights. The authors' code (also
LibMTL's) gives the towers the mean over the three parts of each part's
gradient with unit weights: the same as the whole batch's when the parts
hold equal numbers of rows, and otherwise the mean of three means instead
of one. lambda sums to 1, as in the paper and that code (d is about 1/T of
`equal`'s sum).

Precision. lambda's step is formed in float32: where gamma G_1 G_2^T
lambda is large against lambda, its rounding (~2^-24 of that term) moves
lambda and so d. Against the float64 reference over 20 steps: within 1e-5
relative at gamma <= 0.1, up to 2.4e-5 with gamma = 1 on gradients of norm
~4 (tests/core/weighting/test_modo.py). With a task's gradient zero
throughout, lambda tends to its vertex and d to 0.

Hyper-parameters: gamma = 1e-3 and rho = 0.1, the authors' code's and
LibMTL's defaults (rho = 0: the unregularised step). Algorithm 1 writes
a step size gamma_t per step; the code's, and mtl's, is constant.
"""

from typing import NamedTuple

import jax.numpy as jnp

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import VECTOR, Combined, WeightingMethod
from mtl.errors import ConfigError


class MoDoState(NamedTuple):
  lambdas: jnp.ndarray  # [T] on the simplex


def modo(gamma: float = 1e-3, rho: float = 0.1) -> WeightingMethod:
  """MoDo (Chen et al. 2023) on the shared params' gradients.

  Args:
    gamma: > 0, the step size of lambda.
    rho: >= 0, the l2 regularisation of lambda's step.
  """
  name = 'weighting modo'
  if not gamma > 0:
    raise ConfigError(f'{name}: gamma is {gamma}, expected > 0')
  if not rho >= 0:
    raise ConfigError(f'{name}: rho is {rho}, expected >= 0')

  def init(num_tasks):
    return MoDoState(jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32))

  def update(weights, state, *, task_grads_parts, **unused):
    g = weights[None, :, None] * task_grads_parts.astype(jnp.float32)
    lambdas = state.lambdas
    step = g[0] @ (g[1].T @ lambdas) + rho * lambdas
    stepped = lambdas - gamma * step
    # The projection is the same after a shift by a constant.
    lambdas = gram_lib.project_simplex(stepped - jnp.max(stepped))
    return Combined(weights, lambdas @ g[2]), MoDoState(lambdas)

  return WeightingMethod(
    init, update, frozenset({'task_grads_parts'}), combines_gradients=VECTOR
  )
