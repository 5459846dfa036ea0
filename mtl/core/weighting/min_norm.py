"""The min-norm point of the convex hull of the task gradients (MGDA's QP).

  a* = argmin over the simplex of  a^T G a  (= ||sum_t a_t g_t||^2),

from the Gram matrix alone, all float32. A point a with support S is optimal
exactly when (KKT) it minimises a^T G a on the face's affine hull, i.e.

  [[G_S, 1], [1^T, 0]] [a_S; lambda] = [0; 1],   a_S >= 0,
  (G a)_j >= a^T G a  for every j outside S  (no vertex descends).

T <= MAX_EXACT_TASKS: every support's KKT system is solved (vmapped) and the
point that violates the conditions above least is kept (the optimum's
violation is 0 up to rounding; ties within TIE * T go to the least a^T G a,
then to the larger support: identical gradients get the most even
combination). The conditions, not the values, decide: a weight of 5e-5
changes a^T G a by ~1e-9 of max_t G_tt, below float32's resolution, but
(G a)_j - a^T G a by ~5e-5; and that difference is divided by ||g_j||, its
noise's scale, so a short gradient's condition counts as much as a long
one's (a weight of 8e-3 on a gradient 170 times shorter than the longest
was dropped otherwise).
More tasks: Wolfe's active-set method ("Finding the nearest point in a
polytope", Math. Programming 1976) from Frank-Wolfe's point, in a
lax.while_loop (at most 4 T + 16 face solves): solve the face's KKT system;
if a weight turns negative, step back to the face's boundary and drop it;
else add the most violating j, until the conditions hold.

Each KKT system is solved by an eigendecomposition whose cutoff is float32's
noise (a singular G_S, e.g. identical gradients, gets the minimum-norm, most
even solution), then REFINEMENTS steps of iterative refinement on the
residual: without them the solve's own error (the KKT matrix's condition
number times 6e-8) reached 3e-4 in a and 2e-2 in sum_t a_t g_t on opposed
gradients 100-fold apart; with them a is within ~1e-6 of a float64 solve
of the same float32 Gram (tests/core/weighting/test_exact_mgda_imtl.py). The
system is written in v = a * ||g|| on the cosine matrix, so its entries
are ~1 whatever the gradients' scales.
"""

import jax
import jax.numpy as jnp
from jax import lax

from mtl.core.weighting import gram as gram_lib

MAX_EXACT_TASKS = 8
REFINEMENTS = 3
# Eigenvalues of a KKT matrix (entries ~1) below CUTOFF * (T + 1) are noise.
# 1e-6 dropped directions a float32 Gram still resolves: on five unit
# gradients at 1 - cos ~ 1e-5 with the optimum inside the simplex, a was
# 0.68 off a float64 solve (3.6e-3 at 1e-7, within the float32 Gram's limit).
CUTOFF = 1e-7
# A KKT condition violated by less than TOL * T (G scaled to max G_tt = 1)
# is float32 noise (Wolfe's method); supports whose violations differ by less
# than TIE * T are equally good (the exact search).
TOL = 1e-6
TIE = 1e-8


def min_norm_coefficients(
  gram: jnp.ndarray, num_iterations: int = 250
) -> jnp.ndarray:
  """a* [T] on the simplex; `num_iterations` Frank-Wolfe steps start
  Wolfe's method when T > MAX_EXACT_TASKS."""
  t = gram.shape[0]
  gram = gram / jnp.maximum(jnp.max(jnp.abs(jnp.diag(gram))), gram_lib.EPS)
  if t <= MAX_EXACT_TASKS:
    return _exact(gram)
  return _wolfe(gram, _frank_wolfe(gram, num_iterations))


def _face(gram: jnp.ndarray, m: jnp.ndarray):
  """The minimiser of a^T G a with sum a = 1 on support m (0/1 [T]).

  Solved for v = a * ||g|| on the cosine matrix C (G = N C N), with the
  constraint's row r = 1 / ||g|| scaled to unit length, so the KKT matrix's
  entries are ~1 whatever the gradients' scales."""
  t = gram.shape[0]
  _, n, live = gram_lib.scaled(gram)
  cos = gram_lib.cosines(gram, n, live)
  r = m / n
  size = jnp.linalg.norm(r)
  kkt = jnp.zeros((t + 1, t + 1), gram.dtype)
  kkt = kkt.at[:t, :t].set(cos * (m[:, None] * m[None, :]) + jnp.diag(1 - m))
  kkt = kkt.at[:t, t].set(r / size).at[t, :t].set(r / size)
  inverse = gram_lib.symmetric_pinv(kkt, CUTOFF * (t + 1))
  rhs = jnp.zeros((t + 1,), gram.dtype).at[t].set(1.0 / size)
  x = inverse @ rhs
  for _ in range(REFINEMENTS):
    x = x + inverse @ (rhs - kkt @ x)
  return x[:t] * m / n


def _violation(gram, a, m):
  """How far a (support m) is from the KKT conditions; <= 0 when met.

  (G a)_j - a^T G a = <g_j, d> - ||d||^2 is divided by ||g_j||: its float32
  noise scales with ||g_j||, so a small gradient's condition is resolved as
  well as a large one's (a weight of 8e-3 on a gradient 170 times shorter
  than the largest was dropped otherwise)."""
  _, n, _ = gram_lib.scaled(gram)
  ga = gram @ a
  value = a @ ga
  outside = jnp.where(m > 0, -jnp.inf, (value - ga) / n)
  return jnp.maximum(jnp.max(-a), jnp.max(outside)), value


def _exact(gram: jnp.ndarray) -> jnp.ndarray:
  t = gram.shape[0]
  masks = gram_lib.support_masks(t, gram.dtype)

  def candidate(m):
    a = _face(gram, m)
    violation, _ = _violation(gram, a, m)
    a = jnp.clip(a, 0.0, None)
    a = a / jnp.maximum(a.sum(), gram_lib.EPS)
    return a, a @ gram @ a, violation

  a, values, violation = jax.vmap(candidate)(masks)
  # The least violation of the conditions wins (the optimum's is 0 up to
  # rounding); values decide only among equally good ones, since theirs
  # differ below float32's resolution where it matters (a weight of 5e-5).
  violation = jnp.maximum(violation, 0.0)
  near = violation <= jnp.min(violation) + TIE * t
  best = jnp.min(jnp.where(near, values, jnp.inf))
  tie = near & (values <= best + 1e-6 * jnp.abs(best))  # equal within rounding
  return a[jnp.argmax(jnp.where(tie, masks.sum(1), -1.0))]


def _frank_wolfe(gram: jnp.ndarray, num_iterations: int) -> jnp.ndarray:
  """Sener & Koltun's Frank-Wolfe with exact line search, from uniform."""
  t = gram.shape[0]

  def body(_, a):
    d = jax.nn.one_hot(jnp.argmin(gram @ a), t, dtype=a.dtype) - a
    dgd = d @ gram @ d
    gamma = jnp.clip(-(a @ gram @ d) / jnp.maximum(dgd, gram_lib.EPS), 0, 1)
    return a + jnp.where(dgd > gram_lib.EPS, gamma, 0.0) * d

  return lax.fori_loop(0, num_iterations, body, jnp.full((t,), 1.0 / t))


def _wolfe(gram: jnp.ndarray, a: jnp.ndarray) -> jnp.ndarray:
  """Wolfe's active-set iterations from a (see the module docstring)."""
  t = gram.shape[0]
  _, n, _ = gram_lib.scaled(gram)
  m = (a > TOL).astype(gram.dtype)
  a = jnp.where(m > 0, a, 0.0)
  a = a / a.sum()

  def body(carry):
    a, m, _, i = carry
    b = _face(gram, m)
    inside = jnp.all(jnp.where(m > 0, b > 0, True))
    # Step back to where the first weight reaches zero, and drop it.
    shrink = (m > 0) & (b <= 0)
    ratios = jnp.where(shrink, a / jnp.maximum(a - b, gram_lib.EPS), 1.0)
    theta = jnp.clip(jnp.min(ratios), 0.0, 1.0)
    stepped = jnp.clip(a + theta * (b - a), 0.0, None)
    drop = shrink & (ratios <= theta)
    a_new = jnp.where(inside, jnp.clip(b, 0.0, None), stepped)
    m_new = jnp.where(inside, m, jnp.where(drop, 0.0, m))
    # On the face's minimiser: add the vertex that descends most.
    ga = gram @ a_new
    slack = jnp.where(m_new > 0, jnp.inf, (ga - a_new @ ga) / n)
    j = jnp.argmin(slack)
    add = inside & (slack[j] < -TOL * t)
    m_new = jnp.where(add, m_new.at[j].set(1.0), m_new)
    done = inside & ~add
    return a_new / a_new.sum(), m_new, done, i + 1

  def cond(carry):
    _, _, done, i = carry
    return ~done & (i < 4 * t + 16)

  init = (a, m, jnp.array(False), jnp.array(0, jnp.int32))
  a, _, _, _ = lax.while_loop(cond, body, init)
  return a
