"""MoCo: tracked gradients and weights stepped on their Gram matrix.

Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias
in Multi-objective Learning: A Provably Convergent Approach", ICLR 2023,
Algorithm 1. The state holds an estimate y_t of each task's gradient and
weights lambda on the simplex; at step k (k = 1, 2, ...), with h_t the
task's stochastic gradient,

  y_t    <- y_t - beta_k (y_t - h_t),
  lambda <- Pi_simplex(lambda - gamma_k (Y Y^T + rho I) lambda),
  d       = sum_t lambda_t y_t,

Y [T, P] the rows y_t, beta_k = beta / k^beta_sigma and gamma_k = gamma /
k^gamma_sigma, from y_t = 0 and lambda = 1/T. d holds past steps'
gradients, so the method returns the vector (`combines_gradients=
'vector'`) and keeps Y [T, P] in its state. The incoming weights w act on
the gradients (h_t = w_t g_t); the other groups take the ordinary weighted
sum with them, and they are the reported weights (lambda is in the state).

Differences. The paper's analysis also projects each y_t onto a ball of
radius L_t (a bound on the gradients' norms); its experiments and the
authors' code do not, nor does mtl. The authors' code (shared with LibMTL,
1.1.5) differs from Algorithm 1 in two ways, both offered as
`variant='code'`: it feeds h_t = L_t g_t / (||g_t|| + 1e-8) (the task's
loss times its unit gradient) and replaces the projection onto the simplex
by a softmax. The defaults of beta, beta_sigma, gamma, gamma_sigma and rho
are that code's (0.5, 0.5, 0.1, 0.5, 0).

Precision. lambda's step is formed in float32: where gamma_k Y Y^T lambda
is large and lambda stays inside the simplex, its rounding (~2^-24 of that
term) moves lambda and so d. Against the float64 reference over 20 steps:
within 1e-5 relative at the defaults, up to 3.7e-5 with beta = 1 on opposed
gradients scaled 100-fold, 5.2e-5 with a constant gamma = 1
(tests/core/weighting/test_moco.py). With a task's gradient zero throughout,
lambda tends to its vertex and d to 0 (the minimum-norm point of the hull).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import VECTOR, Combined, WeightingMethod
from mtl.errors import ConfigError

VARIANTS = ('paper', 'code')


class MoCoState(NamedTuple):
  estimates: jnp.ndarray  # y [T, P]
  lambdas: jnp.ndarray  # [T] on the simplex
  count: jnp.ndarray  # int32: updates taken (k of the last one)


def moco(
  beta: float = 0.5,
  beta_sigma: float = 0.5,
  gamma: float = 0.1,
  gamma_sigma: float = 0.5,
  rho: float = 0.0,
  variant: str = 'paper',
) -> WeightingMethod:
  """MoCo (Fernando et al. 2023) on the shared params' gradients.

  Args:
    beta: the estimates' rate, in (0, 1]; beta / k^beta_sigma at step k.
    beta_sigma: >= 0, its decay.
    gamma: > 0, the step size of lambda; gamma / k^gamma_sigma at step k.
    gamma_sigma: >= 0, its decay.
    rho: >= 0, the l2 regularisation of lambda's step.
    variant: 'paper' (Algorithm 1) or 'code' (the authors' code: loss-scaled
      unit gradients, and a softmax for the projection).
  """
  name = 'weighting moco'
  if not 0 < beta <= 1:
    raise ConfigError(f'{name}: beta is {beta}, expected in (0, 1]')
  if not gamma > 0:
    raise ConfigError(f'{name}: gamma is {gamma}, expected > 0')
  for key, value in (
    ('beta_sigma', beta_sigma),
    ('gamma_sigma', gamma_sigma),
    ('rho', rho),
  ):
    if not value >= 0:
      raise ConfigError(f'{name}: {key} is {value}, expected >= 0')
  if variant not in VARIANTS:
    raise ConfigError(
      f'{name}: variant is {variant!r}, expected one of {", ".join(VARIANTS)}'
    )

  def init(num_tasks, num_shared_params=None):
    size = 0 if num_shared_params is None else num_shared_params
    return MoCoState(
      jnp.zeros((num_tasks, size), jnp.float32),
      jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32),
      jnp.zeros((), jnp.int32),
    )

  def update(weights, state, *, task_grads, losses, **unused):
    h = weights[:, None] * task_grads.astype(jnp.float32)
    if variant == 'code':
      losses = jax.lax.stop_gradient(losses.astype(jnp.float32))
      norms = jnp.sqrt(jnp.sum(jnp.square(h), axis=1))
      h = h * (losses / (norms + 1e-8))[:, None]
    count = state.count + 1
    k = count.astype(jnp.float32)
    y = state.estimates - beta / k**beta_sigma * (state.estimates - h)
    t = y.shape[0]
    gram = y @ y.T + rho * jnp.eye(t, dtype=jnp.float32)
    stepped = state.lambdas - gamma / k**gamma_sigma * (gram @ state.lambdas)
    if variant == 'code':
      lambdas = jax.nn.softmax(stepped)
    else:  # The projection is the same after a shift by a constant.
      lambdas = gram_lib.project_simplex(stepped - jnp.max(stepped))
    new_state = MoCoState(y, lambdas, count)
    return Combined(weights, lambdas @ y), new_state

  return WeightingMethod(
    init, update, frozenset({'task_grads'}), combines_gradients=VECTOR
  )
