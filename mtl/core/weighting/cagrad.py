"""CAGrad: the best average-loss direction that also improves the worst task.

Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021. With g0 the mean task gradient and g_w = sum w_t g_t,

  w* = argmin over the simplex of  F(w) = <g_w, g0> + c ||g0|| ||g_w||,
  d  = g0 + (c ||g0|| / ||g_w*||) g_w*,

then d / (1 + c^2) (rescale=1, the default), d / (1 + c) (rescale=2) or d
(rescale=0). This follows the released code (and LibMTL), which uses
c ||g0|| where the paper writes sqrt(c) ||g0||. The official solver is SciPy's
SLSQP; mtl solves the inner problem exactly for T <= 8 (MAX_EXACT_TASKS):

  On the face of the simplex with support S, a stationary point of F has
  G_S w = nu 1 - s b_S (b = G e, e = 1/T, s = ||g_w|| / (c ||g0||)), so
  w = w0 + s w1 with w0, w1 from one symmetric KKT matrix [[G_S, 1], [1^T,
  0]], and ||g_w||^2 = (c ||g0|| s)^2 is a quadratic in s. Every support's
  (up to) two roots are candidates; the feasible one (w >= 0) with the least
  F is the minimiser, on a face or inside (2^T - 1 small solves, vmapped).

The KKT matrices are formed from the cosine matrix (w_t ||g_t|| as the
unknowns), so 100-fold scale differences do not cost accuracy, and solved by
an eigendecomposition whose cutoff is float32's noise (a singular G_S, e.g.
identical gradients, gets the most even solution). Beyond 8 tasks, projected
gradient descent on the simplex with momentum (restarted when F rises),
which lands on faces exactly, until the Frank-Wolfe gap (>= F(w) - F*) is
below `tol` or after `max_iterations` steps; then the exact solve above on
the face it found replaces it unless that is infeasible or worse. All float32;
everything is from the Gram matrix. Scale: d is built from the MEAN
gradient; mtl returns T times its coefficients, so c = 0 gives ones (equal
weighting's sum of task gradients).
"""

import jax
import jax.numpy as jnp
from jax import lax

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import EmptyState, WeightingMethod
from mtl.errors import ConfigError

RESCALES = (0, 1, 2)
MAX_EXACT_TASKS = 8
# Eigenvalues of a KKT matrix (entries ~1) below CUTOFF * (T + 1) are noise.
CUTOFF = 5e-7


def cagrad(
  c: float = 0.4,
  rescale: int = 1,
  tol: float = 1e-6,
  max_iterations: int = 2000,
) -> WeightingMethod:
  """CAGrad (Liu et al. 2021) on the backbone gradients.

  Args:
    c: >= 0, the radius of the conflict-averse ball (0: plain averaging).
    rescale: 0, 1 (divide by 1 + c^2) or 2 (divide by 1 + c).
    tol: > 0, more than 8 tasks only: stop when the Frank-Wolfe gap (a
      bound on F(w) - F*) is below tol (the largest ||g_t||^2 being 1).
    max_iterations: >= 1, more than 8 tasks only: at most this many steps.
  """
  if not c >= 0:
    raise ConfigError(f'weighting cagrad: c is {c}, expected >= 0')
  if rescale not in RESCALES:
    raise ConfigError(
      f'weighting cagrad: rescale is {rescale!r}, expected 0, 1 or 2'
    )
  if not tol > 0:
    raise ConfigError(f'weighting cagrad: tol is {tol}, expected > 0')
  if not (isinstance(max_iterations, int) and max_iterations >= 1):
    raise ConfigError(
      f'weighting cagrad: max_iterations is {max_iterations!r}, expected an '
      'int >= 1'
    )
  divisor = {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]

  def init(num_tasks):
    del num_tasks
    return EmptyState()

  def update(weights, state, *, task_grad_gram, **unused):
    g = gram_lib.weighted(task_grad_gram.astype(jnp.float32), weights)
    t = g.shape[0]
    if c == 0:
      return weights / divisor, state
    w, lam = cagrad_weights(g, c, tol, max_iterations)
    coefficients = 1.0 / t + lam * w
    return t * coefficients / divisor * weights, state

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )


def cagrad_weights(gram, c, tol=1e-6, max_iterations=2000):
  """(w* [T], c ||g0|| / ||g_w*||), the latter 0 when g_w* vanishes."""
  t = gram.shape[0]
  gram, n, live = gram_lib.scaled(gram)
  e = jnp.full((t,), 1.0 / t, gram.dtype)
  radius = c * jnp.sqrt(jnp.maximum(e @ gram @ e, 0.0))
  candidates, to_w = _faces(gram, n, live, radius)
  if t <= MAX_EXACT_TASKS:
    w = _exact(candidates, to_w, live)
  else:
    w = _projected(gram, radius, tol, max_iterations)
    # Polish: the exact minimiser on the face projected gradient found.
    v, values = candidates((w > 0).astype(gram.dtype))
    polished = to_w(v[jnp.argmin(values)])
    f = _objective(gram, radius)
    better = jnp.isfinite(jnp.min(values)) & (
      f(polished) <= f(w) + 1e-6 * (jnp.abs(f(w)) + 1.0)
    )
    w = jnp.where(better, polished, w)
    w = jnp.where(jnp.isfinite(w).all(), w, e)  # c ||g0|| = 0: any w
  gw_norm = jnp.sqrt(jnp.maximum(w @ gram @ w, 0.0))
  # g_w* = 0 (a zero gradient, or 0 in the hull): d = g0, as the released
  # code's c / (||g_w|| + 1e-8) times g_w = 0.
  ok = gw_norm > 1e-6 * jnp.maximum(radius, 1e-30)
  lam = jnp.where(ok, radius / jnp.where(ok, gw_norm, 1.0), 0.0)
  return w, lam


def _objective(gram, radius):
  """F(w) on the scaled Gram matrix."""
  b = gram @ jnp.full((gram.shape[0],), 1.0 / gram.shape[0], gram.dtype)
  return lambda w: b @ w + radius * jnp.sqrt(jnp.maximum(w @ gram @ w, 0.0))


def _faces(gram, n, live, radius):
  """(candidates(mask), to_w): the stationary points of F on a face.

  Unknowns v_t = w_t n_t / m (m the least live norm): G -> the cosines C,
  b -> beta_t = b_t / n_t, sum w = 1 -> rho^T v = 1 with rho = m / n, and F
  -> F / m. `candidates` gives a face's two roots [2, T] and their F [2]
  (inf when infeasible), `to_w` maps v back to w.
  """
  t = gram.shape[0]
  dtype = gram.dtype
  m = jnp.min(jnp.where(live, n, jnp.inf))
  m = jnp.where(jnp.isfinite(m), m, 1.0)
  cos = gram_lib.cosines(gram, n, live)
  beta = jnp.where(live, gram @ jnp.full((t,), 1.0 / t, dtype) / n, 0.0)
  rho = jnp.where(live, m / n, 0.0)
  r = jnp.maximum(radius, 1e-30)

  def objective(v):
    return beta @ v + r * jnp.sqrt(jnp.maximum(v @ cos @ v, 0.0))

  def candidates(mask):
    on = mask[:, None] * mask[None, :]
    kkt = jnp.zeros((t + 1, t + 1), dtype)
    kkt = kkt.at[:t, :t].set(cos * on + jnp.diag(1.0 - mask))
    kkt = kkt.at[:t, t].set(rho * mask).at[t, :t].set(rho * mask)
    inverse = gram_lib.symmetric_pinv(kkt, CUTOFF * (t + 1))
    v0 = inverse[:t, t] * mask  # rhs (0, 1)
    v1 = -(inverse[:t, :t] @ (beta * mask)) * mask  # rhs (-beta, 0)
    a0, a1, a2 = v0 @ cos @ v0, v0 @ cos @ v1, v1 @ cos @ v1
    # (r^2 - a2) s^2 - 2 a1 s - a0 = 0, the roots in a stable form.
    quad = r**2 - a2
    disc = a1**2 + quad * a0
    root = jnp.sqrt(jnp.maximum(disc, 0.0))
    big = a1 + jnp.where(a1 >= 0, root, -root)
    s = jnp.stack([big / quad, -a0 / big])
    v = v0[None, :] + s[:, None] * v1[None, :]
    feasible = (
      (disc >= 0)
      & jnp.isfinite(s)
      & (s > 0)
      & (v >= -1e-5 * jnp.max(jnp.abs(v), axis=1, keepdims=True)).all(1)
      & (jnp.abs(v @ rho - 1.0) < 1e-3)
      & ((mask * (~live).astype(dtype)).sum() == 0)
    )
    v = jnp.clip(v, 0.0, None)
    v = v / jnp.where(v @ rho > 0, v @ rho, 1.0)[:, None]
    values = jax.vmap(objective)(v)
    values = jnp.where(feasible & jnp.isfinite(values), values, jnp.inf)
    return v, values

  def to_w(v):
    w = jnp.where(live, v * m / n, 0.0)
    return w / jnp.maximum(w.sum(), 1e-30)

  return candidates, to_w


def _exact(candidates, to_w, live):
  """The minimiser over all supports (see the module docstring)."""
  t = live.shape[0]
  masks = gram_lib.support_masks(t)
  vs, values = jax.vmap(candidates)(masks)  # [2^T - 1, 2, T], [2^T - 1, 2]
  vs, values = vs.reshape(-1, t), values.reshape(-1)
  sizes = jnp.repeat(masks.sum(1), 2)
  # Ties (equal F within rounding) go to the larger support: among equally
  # good points, the most even combination (identical gradients).
  best = jnp.min(values)
  tie = values <= best + 1e-6 * jnp.maximum(jnp.abs(best), 1e-30)
  w = to_w(vs[jnp.argmax(jnp.where(tie, sizes, -1.0))])
  # No feasible candidate: only when c ||g0|| = 0 (then d = g0 whatever w).
  w = jnp.where(jnp.isfinite(best), w, jnp.full((t,), 1.0 / t, w.dtype))
  # A zero gradient's vertex gives F = 0 and g_w = 0 (then d = g0): it wins
  # when no live point has F < 0.
  dead = jnp.argmax(~live)
  at_dead = (~live).any() & ~(best < 0)
  return jnp.where(at_dead, jax.nn.one_hot(dead, t, dtype=w.dtype), w)


def _projected(gram, radius, tol, max_iterations):
  """Projected gradient with momentum, restarted when F rises (T > 8)."""
  t = gram.shape[0]
  b = gram @ jnp.full((t,), 1.0 / t, gram.dtype)

  def power(_, x):
    x = gram @ x
    return x / jnp.maximum(jnp.linalg.norm(x), 1e-30)

  x = lax.fori_loop(0, 30, power, jnp.ones((t,), gram.dtype))
  # ||Hessian|| <= radius lambda_max(G) / ||g_w||; 1.1: the power estimate.
  curvature = 1.1 * radius * jnp.maximum(x @ gram @ x, 1e-30)

  objective = _objective(gram, radius)

  def gradient(w):
    return b + radius * (gram @ w) / jnp.sqrt(jnp.maximum(w @ gram @ w, 1e-12))

  def gap(w):  # Frank-Wolfe gap: F(w) - F* <= gap (convexity)
    grad = gradient(w)
    return grad @ w - jnp.min(grad)

  def body(carry):
    w, y, k, _, i = carry
    q = jnp.sqrt(jnp.maximum(y @ gram @ y, 1e-12))
    new = gram_lib.project_simplex(y - gradient(y) * q / curvature)
    worse = objective(new) > objective(w)
    # Rising F: restart the momentum from w; without momentum F cannot fall
    # further in float32: stop.
    stuck = worse & (k == 0)
    new = jnp.where(worse, w, new)
    momentum = jnp.where(worse, 0.0, k / (k + 3.0))
    k = jnp.where(worse, 0.0, k + 1.0)
    left = jnp.where(stuck, 0.0, jnp.where(worse, jnp.inf, gap(new)))
    return new, new + momentum * (new - w), k, left, i + 1

  def cond(carry):
    _, _, _, left, i = carry
    return (left > tol) & (i < max_iterations)

  w0 = jnp.full((t,), 1.0 / t, gram.dtype)
  zero = jnp.zeros((), gram.dtype)
  inf = jnp.array(jnp.inf, gram.dtype)
  init = (w0, w0, zero, inf, jnp.array(0, jnp.int32))
  w, _, _, _, _ = lax.while_loop(cond, body, init)
  return w
