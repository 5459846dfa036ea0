"""Nash-MTL: the Nash bargaining solution between the tasks' gradients.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task
Learning as a Bargaining Game", ICML 2022. The update is d = sum_t alpha_t g_t
with alpha > 0 solving (their eq. 2)

  G alpha = 1 / alpha    (elementwise),   G_ij = <g_i, g_j>,

so <g_i, d> = 1 / alpha_i and ||d||^2 = alpha^T G alpha = T: ||d|| = sqrt(T)
at every scale of the gradients. The released code divides G by its Frobenius
norm N for cvxpy's sake but writes its constraint as
-log(alpha_i N) - log((G / N) alpha)_i <= 0, i.e. alpha_i (G alpha)_i >= 1
on the unnormalised G: its alpha solves the equation above, as here.

mtl solves it on G / s (s = max_t G_tt, for conditioning) and undoes the
scaling exactly: if (G / s) a = 1 / a then alpha = a / sqrt(s). The solution
is the minimiser of the strictly convex, self-concordant f(a) = a^T G a / 2 -
sum log a_t (the official code reaches it by a sequence of convex
approximations with cvxpy), found by Newton's method in the scaled variables
a * (1 + z): each step solves (A G A + I) z = -(a * (G a) - 1), A = diag(a),
a matrix whose eigenvalues are >= 1 whatever the gradients' scales or
angles; the step is damped by 1 / (1 + lambda) (lambda the Newton decrement)
until lambda < 1/4, which keeps every iterate positive. It starts from the
better (in f) of the previous solution (warm start, as the official code)
and a ~ 1 / ||g_t|| (exact for orthogonal or parallel gradients), each
rescaled to its best multiple, and stops when lambda^2 < 1e-10 (one more
quadratically convergent step is then below float32's resolution) or after
`max_iterations`. A zero gradient (||g_t||^2 < 1e-20 max_s ||g_s||^2) can
meet no bargaining condition: it gets alpha_t = 0 and the others solve the
game among themselves. Where no alpha > 0 solves the equation (some positive
combination of the gradients is zero, e.g. g_2 = -g_1: no direction helps
every task) the iterates run off, or meet the equation only through float32
rounding (RESOLVED); mtl then keeps the previous alpha, as the released code
does when its solver fails. All float32. `update_every` > 1
re-solves only every k steps and reuses alpha in between, as the official
`update_weights_every`.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import WeightingMethod
from mtl.errors import ConfigError

# Newton decrement^2 below which the solve stops (2 (f - f*) ~ lambda^2).
TOL = 1e-10
# A last decrement^2 above this (the step before it was outside Newton's
# quadratic region) means no solution was reached.
SOLVED = 1e-3
# Iterates with a_t ||g_t|| (scaled) above this are diverging: a solution's
# are 1 / <u_t, d>, ~1 / sqrt(1 - |cos|) <= ~1e4 in float32 at the worst.
MAX_AN = 1e6
# (G a)_t / (|G| a)_t of a solution must exceed this (100 float32 ulps): for
# T = 2 it is (1 - |cos|) / 2, so gradients with cos < -0.99998 count as
# exactly opposed (no solution) rather than a solution of rounding noise.
RESOLVED = 1e-5


class NashState(NamedTuple):
  alpha: jnp.ndarray  # [T] the last solution (reused, and the warm start)


def nash_mtl(
  update_every: int = 1, max_iterations: int = 50
) -> WeightingMethod:
  """Nash-MTL (Navon et al. 2022) on the backbone gradients.

  Args:
    update_every: solve every this many steps (>= 1), reuse alpha between.
    max_iterations: at most this many Newton steps per solve (>= 1); a
      warm-started solve takes 2-3, a cold one ~5-8 (an unfinished one
      keeps the previous alpha).
  """
  for name, value in (
    ('update_every', update_every),
    ('max_iterations', max_iterations),
  ):
    if not (isinstance(value, int) and value >= 1):
      raise ConfigError(
        f'weighting nash_mtl: {name} is {value!r}, expected an int >= 1'
      )

  def init(num_tasks):
    return NashState(jnp.ones((num_tasks,), jnp.float32))

  def update(weights, state, *, task_grad_gram, step, **unused):
    g = gram_lib.weighted(task_grad_gram.astype(jnp.float32), weights)
    alpha = lax.cond(
      step % update_every == 0,
      lambda: nash_alpha(g, state.alpha, max_iterations),
      lambda: state.alpha,
    )
    return alpha * weights, NashState(alpha)

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )


def nash_alpha(
  gram: jnp.ndarray, previous: jnp.ndarray, max_iterations: int
) -> jnp.ndarray:
  """alpha > 0 with G alpha = 1 / alpha (0 for zero gradients); `previous`
  where there is no solution."""
  t = gram.shape[0]
  scale = jnp.maximum(jnp.max(jnp.diag(gram)), 1e-30)
  g, n, live = gram_lib.scaled(gram)
  # A dead task is its own game, a_t = 1, dropped at the end.
  on = live[:, None] & live[None, :]
  g = jnp.where(on, g, jnp.eye(t, dtype=g.dtype))

  def f(a):
    return 0.5 * a @ g @ a - jnp.sum(jnp.log(a))

  def best_multiple(a):  # argmin_k f(k a): k^2 a^T G a = T
    floor = 1e-8 * jnp.sum((a * n) ** 2)  # below float32's resolution
    return a * jnp.sqrt(t / jnp.maximum(a @ g @ a, floor))

  cold = best_multiple(1.0 / n)
  warm = jnp.where(live, previous, 1.0)
  usable = jnp.isfinite(warm).all() & (warm > 0).all()
  warm = best_multiple(jnp.where(usable, warm, 1.0 / n))
  start = jnp.where(f(warm) < f(cold), warm, cold)

  def body(carry):
    a, _, i, _ = carry
    residual = a * (g @ a) - 1.0
    hess = a[:, None] * g * a[None, :] + jnp.eye(t, dtype=g.dtype)
    z = jnp.linalg.solve(hess, residual)
    decrement2 = jnp.maximum(residual @ z, 0.0)
    damping = jnp.where(decrement2 < 1 / 16, 1.0, 1.0 / (1.0 + decrement2**0.5))
    new = a * (1.0 - damping * z)
    # A solution has a_t ||g_t|| = 1 / <u_t, d> with ||d|| = sqrt(T):
    # beyond MAX_AN (or not finite) the iterates are running off.
    failed = ~(jnp.isfinite(new).all() & (jnp.max(new * n) < MAX_AN))
    failed = failed | ~jnp.isfinite(decrement2)
    return jnp.where(failed, a, new), decrement2, i + 1, failed

  def cond(carry):
    _, decrement2, i, failed = carry
    return (decrement2 > TOL) & (i < max_iterations) & ~failed

  init = (
    start,
    jnp.array(jnp.inf, g.dtype),
    jnp.array(0, jnp.int32),
    jnp.array(False),
  )
  a, decrement2, _, failed = lax.while_loop(cond, body, init)
  # No solution: some a > 0 has sum_t a_t g_t = 0 (f is unbounded below,
  # the iterates run off with a decrement that does not fall), e.g. g_2 =
  # -g_1. The released code's solver then fails and it keeps its previous
  # alpha; so does mtl.
  # In float32 G a is known to ~1e-7 |G| a: where it cancels below
  # RESOLVED, a * (G a) = 1 is met by rounding noise, not by the gradients.
  resolved = (g @ a >= RESOLVED * (jnp.abs(g) @ a)).all()
  solved = ~failed & (decrement2 < SOLVED) & resolved
  return jnp.where(solved, jnp.where(live, a / jnp.sqrt(scale), 0.0), previous)
