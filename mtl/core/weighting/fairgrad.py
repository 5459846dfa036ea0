"""FairGrad: alpha-fair allocation of the update among the tasks.

Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024. The
update d = sum_t w_t g_t maximises the alpha-fair utility sum_t
u_t^{1-alpha} / (1 - alpha) of the tasks' rates u_t = <g_t, d> over a ball;
its KKT conditions give (their eq. 6, with G_ij = <g_i, g_j>)

  G w = w^{-1/alpha}    (elementwise),   w > 0,

which the released code (and LibMTL's FairGrad) solves with SciPy's
least_squares on the unnormalised G from w = 1/T. alpha = 1 (LibMTL's
default) is proportional fairness, Nash-MTL's G w = 1 / w; alpha -> inf
tends to max-min fairness (MGDA-like), alpha -> 0 to the plain sum.

mtl solves the same equation exactly. With p = 1 / alpha, its solution is the
minimiser of the strictly convex f(w) = w^T G w / 2 - sum_t h(w_t), h' =
w^{-p} (h = log w for p = 1, w^{1-p} / (1 - p) otherwise), found by Newton's
method in the scaled variables w * (1 + z): each step solves (W G W + p
diag(w^{1-p})) z = -(w * (G w) - w^{1-p}), W = diag(w), with backtracking
on f that keeps w > 0 (up to f's float32 rounding, which opposed gradients
make large: w^T G w cancels), from the better (in f)
of the previous solution and w_t = ||g_t||^{-2 / (1 + p)} (exact for
orthogonal gradients), each rescaled to its best multiple, until the
relative residual max_t |w_t (G w)_t / w_t^{1-p} - 1| < TOL or after
`max_iterations` steps, keeping the iterate of the smallest residual (at
float32's noise floor the residual walks up and down); it counts as solved
below 1e-4 plus the residual's
own float32 rounding at w, and never at 1e-2 or above. On G / s (s =
max_t G_tt) and rescaled exactly: w(G) = w(G / s) s^{-1 / (1 + p)}. A
zero gradient gets w_t = 0 and the others solve the equation among
themselves. Where no w > 0 solves it (a
positive combination of the gradients is zero, e.g. g_2 = -g_1) the
previous w is kept, as Nash-MTL's solver does here (the released code's
least_squares then stops at a bound). All float32. Accuracy against a
float64 solve on the explicit gradients (tests/core/weighting/test_fairgrad.py):
within 1e-5 relative plus 4 times the change of the exact answer when the
Gram's entries move by one float32 ulp (nearly parallel gradients).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import WeightingMethod
from mtl.errors import ConfigError

TOL = 1e-7
# A final relative residual above this, plus the residual's own float32
# rounding (`rounding`), means no solution was reached; above UNSOLVED it
# never counts as a solution (w diverging where none exists: residual 1).
SOLVED = 1e-4
UNSOLVED = 1e-2
# Backtracking step sizes 1, 1/2, ..., 2^-20, tried at once.
# numpy, not jnp: a jnp op at import starts JAX's backend (forks then hang).
STEPS = np.exp2(-np.arange(21, dtype=np.float32))


class FairGradState(NamedTuple):
  w: jnp.ndarray  # [T] the last solution (the warm start and the fallback)


def fairgrad(alpha: float = 1.0, max_iterations: int = 100) -> WeightingMethod:
  """FairGrad (Ban & Ji 2024) on the backbone gradients.

  Args:
    alpha: > 0, the fairness degree (1: proportional fairness).
    max_iterations: >= 1, at most this many Newton steps per solve.
  """
  if not (isinstance(alpha, (int, float)) and 0 < alpha < float('inf')):
    raise ConfigError(
      f'weighting fairgrad: alpha is {alpha!r}, expected a number > 0'
    )
  if not (isinstance(max_iterations, int) and max_iterations >= 1):
    raise ConfigError(
      f'weighting fairgrad: max_iterations is {max_iterations!r}, expected '
      'an int >= 1'
    )
  p = 1.0 / float(alpha)

  def init(num_tasks):
    return FairGradState(jnp.ones((num_tasks,), jnp.float32))

  def update(weights, state, *, task_grad_gram, **unused):
    g = gram_lib.weighted(task_grad_gram.astype(jnp.float32), weights)
    w = fair_weights(g, state.w, p, max_iterations)
    return w * weights, FairGradState(w)

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )


def _h(w, p):
  if p == 1.0:
    return jnp.log(w)
  return w ** (1.0 - p) / (1.0 - p)


def rounding(g, w, p):
  """Twice the first-order bound on the float32 rounding of the relative
  residual w (G w) / w^{1-p} - 1 at w: (T + 2) 2^-24 max_t w_t (|G| w)_t /
  w_t^{1-p}. Nearly opposed gradients make G w a small difference of large
  terms, so an exact solution's computed residual is this large (g_2 = -3 g_1
  rotated by 2.6 degrees: 2e-4), and it is not a failure to solve."""
  t = g.shape[0]
  scale = jnp.max(w * (jnp.abs(g) @ w) / w ** (1.0 - p))
  return jnp.where(jnp.isfinite(scale), (t + 2) * 2.0**-23 * scale, 0.0)


def fair_weights(gram, previous, p, max_iterations):
  """w > 0 with G w = w^{-p} (0 for zero gradients); `previous` where
  there is no solution."""
  t = gram.shape[0]
  scale = jnp.maximum(jnp.max(jnp.diag(gram)), 1e-30)
  g, n, live = gram_lib.scaled(gram)
  on = live[:, None] & live[None, :]
  g = jnp.where(on, g, jnp.eye(t, dtype=g.dtype))  # a dead task: w_t = 1

  def f(w):
    return jnp.where(
      (w > 0).all(), 0.5 * w @ g @ w - jnp.sum(_h(jnp.abs(w), p)), jnp.inf
    )

  def f_rounding(w):
    # Twice (f(w) and a candidate's) the first-order bound on the float32
    # rounding of f: (T + 2) 2^-24 (w^T |G| w / 2 + sum |h(w)|) each.
    terms = 0.5 * w @ jnp.abs(g) @ w + jnp.sum(jnp.abs(_h(jnp.abs(w), p)))
    return (t + 2) * 2.0**-23 * jnp.where(jnp.isfinite(terms), terms, 0.0)

  def residual(w):  # relative: w (G w) / w^{1-p} - 1
    return w * (g @ w) / w ** (1.0 - p) - 1.0

  def best_multiple(w):  # argmin_k f(k w): k^{1+p} w^T G w = sum w^{1-p}
    q = jnp.maximum(w @ g @ w, 1e-8 * jnp.sum((w * n) ** 2))
    return w * (jnp.sum(w ** (1.0 - p)) / q) ** (1.0 / (1.0 + p))

  cold = best_multiple(n ** (-2.0 / (1.0 + p)))
  warm = jnp.where(live, previous * scale ** (1.0 / (1.0 + p)), 1.0)
  usable = jnp.isfinite(warm).all() & (warm > 0).all()
  warm = best_multiple(jnp.where(usable, warm, cold))
  start = jnp.where(f(warm) < f(cold), warm, cold)

  def body(carry):
    w, _, i, _, best, best_res = carry
    grad = w * (g @ w) - w ** (1.0 - p)
    hess = w[:, None] * g * w[None, :] + p * jnp.diag(w ** (1.0 - p))
    z = jnp.linalg.solve(hess, grad)
    candidates = w[None, :] * (1.0 - STEPS[:, None] * z[None, :])
    values = jax.vmap(f)(candidates)
    slope = grad @ z
    # Armijo, with float32's rounding of f allowed for (`f_rounding`): near
    # the minimum, and where w^T G w cancels (opposed gradients, w ~ 1e2).
    slack = jnp.maximum(1e-6 * (jnp.abs(f(w)) + 1.0), f_rounding(w))
    armijo = values <= f(w) - 1e-4 * STEPS * slope + slack
    k = jnp.argmax(armijo)
    new = jnp.where(armijo[k], candidates[k], w)
    stuck = ~armijo[k] | ~jnp.isfinite(new).all()
    res = jnp.max(jnp.abs(residual(new)))
    better = res < best_res
    best = jnp.where(better, new, best)
    return new, res, i + 1, stuck, best, jnp.where(better, res, best_res)

  def cond(carry):
    _, res, i, stuck, _, _ = carry
    return (res > TOL) & (i < max_iterations) & ~stuck

  res = jnp.max(jnp.abs(residual(start)))
  init = (start, res, jnp.array(0, jnp.int32), jnp.array(False), start, res)
  # The iterate of the smallest residual: at float32's noise floor (w over
  # many orders of magnitude, opposed gradients) the accepted steps walk
  # the residual up and down, and the last one need not be the best.
  _, _, _, _, w, res = lax.while_loop(cond, body, init)
  solved = res < jnp.minimum(SOLVED + rounding(g, w, p), UNSOLVED)
  w = jnp.where(live, w * scale ** (-1.0 / (1.0 + p)), 0.0)
  return jnp.where(solved, w, previous)
