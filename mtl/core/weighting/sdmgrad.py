"""SDMGrad: a direction near the mean gradient, weights on two samples.

Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and
Provable Stochastic Algorithms", NeurIPS 2023 (stochastic direction-oriented
multi-objective gradient descent). The direction-oriented problem keeps the
common descent direction d near the target g_0 = mean_t g_t:

  w* = argmin_{w in simplex} ||G^T w + lambda g_0||^2 / 2,
  d  = (G^T w* + lambda g_0) / (1 + lambda),

G [T, P] the rows g_t, lambda the key `lamda` (0: MGDA's direction;
lambda -> inf: the mean gradient). Its stochastic algorithm takes three
independent samples per step, xi, xi' for the weights' gradient (unbiased:
their product estimates G G^T) and zeta for the direction:

  A   = G(xi) G(xi')^T,  b = A 1 / T         (= G(xi) g_0(xi'))
  w  <- Pi_simplex(w - lr (A w + lambda b))   (`iterations` times)
  d   = (G(zeta)^T w + lambda g_0(zeta)) / (1 + lambda),

w warm-started from the previous step (1/T at the first). The samples are
the three parts of the step's global batch (`task_grads_parts`,
`mtl.core.batch_parts`: zeta the first, xi and xi' the others; the same on
one device and on several). d is no combination of the whole batch's
gradients: the method returns the vector (`combines_gradients='vector'`)
and keeps w in its state.

The authors' code (and LibMTL's, which mtl follows) solves the inner
problem as above with these choices, each a key: `normalise` divides A by
the squared mean of the gradient norms, (mean_t sqrt(max(A_tt, 0)))^2 +
1e-8, so that `lr` is scale-free; the steps are PyTorch SGD with heavy-ball
`momentum` (the buffer restarted each step); `iterations` of them. Plain
projected stochastic gradient steps on w, the form the paper analyses, are
`momentum=0, normalise=False` with lr their step size.

The incoming weights w_in act on the gradients (g_t -> w_in_t g_t in every
sample); the other groups (towers) take the ordinary weighted sum with them
over the whole batch, and they are the reported weights. LibMTL gives the
towers the sum over the three parts of each part's gradient instead (three
times the batch's mean when the parts hold equal numbers of rows).

Conditioning. At LibMTL's lr = 5 the inner iteration does not settle
for some gradient sets within its 20 iterations, and w depends on the
gradients' last bits. Measured on the float64 reference itself over 20
steps (tests/core/weighting/test_sdmgrad.py): one float32 ulp of the
gradients moves d by up to 2.3 relative on 6 and 10 random tasks and 1.6e-3
on 5 opposed ones, by 1e-7 at lr = 1. Where the reference is well posed mtl
is within 1e-5 of it (1e-4 where the reference moves by ~7e-6 under one
ulp). 8 devices equal one (tests/core/test_parallel.py, two tasks).

Hyper-parameters (LibMTL's defaults): lamda = 0.3 (>= 0), iterations = 20,
lr = 5.0 (the authors' other code uses 10), momentum = 0.5 (in [0, 1)),
normalise = True.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import VECTOR, Combined, WeightingMethod
from mtl.errors import ConfigError

# Added to the squared scale of `normalise`, as in the authors' code.
EPS = 1e-8


class SDMGradState(NamedTuple):
  w: jnp.ndarray  # [T] on the simplex


def inner_weights(a, b, w, *, lamda, lr, momentum, iterations):
  """`iterations` projected heavy-ball steps on w^T A w / 2 + lamda w^T b
  (the gradient taken as A w + lamda b, as written, A not symmetrised)."""

  def body(_, carry):
    w, buf = carry
    buf = momentum * buf + a @ w + lamda * b
    stepped = w - lr * buf
    # The projection is the same after a shift by a constant.
    return gram_lib.project_simplex(stepped - jnp.max(stepped)), buf

  w, _ = jax.lax.fori_loop(0, iterations, body, (w, jnp.zeros_like(w)))
  return w


def sdmgrad(
  lamda: float = 0.3,
  iterations: int = 20,
  lr: float = 5.0,
  momentum: float = 0.5,
  normalise: bool = True,
) -> WeightingMethod:
  """SDMGrad (Xiao et al. 2023) on the shared params' gradients.

  Args:
    lamda: >= 0, how near d stays to the mean gradient.
    iterations: >= 1, the inner steps of w per train step.
    lr: > 0, their step size.
    momentum: in [0, 1), their heavy-ball momentum.
    normalise: divide G(xi) G(xi')^T by the squared mean gradient norm.
  """
  name = 'weighting sdmgrad'
  if not lamda >= 0:
    raise ConfigError(f'{name}: lamda is {lamda}, expected >= 0')
  if not (isinstance(iterations, int) and iterations >= 1):
    raise ConfigError(
      f'{name}: iterations is {iterations!r}, expected an int >= 1'
    )
  if not lr > 0:
    raise ConfigError(f'{name}: lr is {lr}, expected > 0')
  if not 0 <= momentum < 1:
    raise ConfigError(f'{name}: momentum is {momentum}, expected in [0, 1)')

  def init(num_tasks):
    return SDMGradState(jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32))

  def update(weights, state, *, task_grads_parts, **unused):
    g = weights[None, :, None] * task_grads_parts.astype(jnp.float32)
    zeta, xi, xi_prime = g[0], g[1], g[2]
    a = xi @ xi_prime.T
    if normalise:
      scale = jnp.mean(jnp.sqrt(jnp.maximum(jnp.diag(a), 0.0)))
      a = a / (scale**2 + EPS)
    b = jnp.mean(a, axis=1)
    w = inner_weights(
      a,
      b,
      state.w,
      lamda=lamda,
      lr=lr,
      momentum=momentum,
      iterations=iterations,
    )
    d = (w @ zeta + lamda * jnp.mean(zeta, axis=0)) / (1 + lamda)
    return Combined(weights, d), SDMGradState(w)

  return WeightingMethod(
    init, update, frozenset({'task_grads_parts'}), combines_gradients=VECTOR
  )
