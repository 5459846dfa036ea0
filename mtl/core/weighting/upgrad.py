"""UPGrad: every task gradient projected onto the dual cone of all of them.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024
(arXiv 2406.16232). With J the matrix of task gradients (rows g_t) and the
dual cone C = {x : J x >= 0} (no task's loss rises), UPGrad averages the
projections of the weighted gradients w_i g_i onto C (their eq. for
A_UPGrad). By their Proposition 1, the projection of J^T u is J^T v with

  v = argmin_{v >= u} v^T G v     (G = J J^T, the Gram matrix),

so the coefficients are c = sum_i v(w_i e_i), a linear combination of the
task gradients as in every gradient-space method here. As in their torchjd
implementation, G is first divided by its trace (or set to zero when the
trace is below `norm_eps`) and `reg_eps` I is added (a float Gram matrix
may not be exactly positive definite); torchjd's preference vector (mean
weights by default) is the incoming task weights w here, and mtl returns T
times torchjd's weights with weights of one (the scale of equal
weighting's sum). reg_eps = 0 is the paper's exact projection. torchjd's
outputs are test fixtures (tests/core/weighting/test_torchjd_fixtures.py).

Each QP (T of them, one per task) is solved exactly, with z = v - w_i e_i
>= 0: on a support F of z its KKT system G_FF z_F = -(G u)_F, kept when z_F
>= 0 and (G v)_j >= 0 outside F, within float32's noise (TOL). Up to
MAX_EXACT_TASKS tasks every support is tried (vmapped); beyond, Lawson &
Hanson's active-set method (Solving Least Squares Problems, 1974: add the
most violating j, step back to the boundary when a z_j turns negative) in
a lax.while_loop of at most 4 T + 16 solves. Each solve is an
eigendecomposition whose cutoff is float32's noise, refined on its
residual. All float32, from the Gram matrix. Accuracy against the float64
QPs on the explicit gradients (tests/core/weighting/test_upgrad.py): within 1e-5
relative plus 4 times the change of the exact answer when the Gram's
entries move by one float32 ulp (with reg_eps = 0 and nearly parallel or
opposed gradients the QP is ill-conditioned).
"""

import jax
import jax.numpy as jnp
from jax import lax

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import EmptyState, WeightingMethod
from mtl.errors import ConfigError

MAX_EXACT_TASKS = 8
REFINEMENTS = 3
CUTOFF = 1e-7  # eigenvalues of G_FF (trace-normalised) below: noise
TOL = 1e-6  # KKT violations below TOL * T: float32 noise


def upgrad(norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> WeightingMethod:
  """UPGrad (Quinton & Rey 2024) on the backbone gradients.

  Args:
    norm_eps: >= 0, a Gram matrix whose trace is below this counts as zero.
    reg_eps: >= 0, added to the trace-normalised Gram's diagonal.
  """
  for name, value in (('norm_eps', norm_eps), ('reg_eps', reg_eps)):
    if not (isinstance(value, (int, float)) and 0 <= value < float('inf')):
      raise ConfigError(
        f'weighting upgrad: {name} is {value!r}, expected a number >= 0'
      )

  def init(num_tasks):
    del num_tasks
    return EmptyState()

  def update(weights, state, *, task_grad_gram, **unused):
    g = task_grad_gram.astype(jnp.float32)
    t = g.shape[0]
    trace = jnp.trace(g)
    g = jnp.where(trace >= norm_eps, g / jnp.maximum(trace, 1e-30), 0.0)
    g = g + reg_eps * jnp.eye(t, dtype=g.dtype)
    u = jnp.diag(weights.astype(jnp.float32))  # row i: w_i e_i
    solve = _exact if t <= MAX_EXACT_TASKS else _active_set
    return jnp.sum(jax.vmap(lambda ui: solve(g, ui))(u), axis=0), state

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )


def _face(gram, u, m):
  """z on support m (0/1 [T]) with G_FF z_F = -(G u)_F, 0 elsewhere."""
  a = gram * (m[:, None] * m[None, :]) + jnp.diag(1.0 - m)
  inverse = gram_lib.symmetric_pinv(a, CUTOFF)
  rhs = -(gram @ u) * m
  z = inverse @ rhs
  for _ in range(REFINEMENTS):
    z = z + inverse @ (rhs - a @ z)
  return z * m


def _violation(gram, u, z, m):
  v = u + z
  outside = jnp.where(m > 0, -jnp.inf, -(gram @ v))
  return jnp.maximum(jnp.max(jnp.where(m > 0, -z, -jnp.inf)), jnp.max(outside))


def _exact(gram, u):
  t = gram.shape[0]
  masks = jnp.concatenate(
    [jnp.zeros((1, t), gram.dtype), gram_lib.support_masks(t, gram.dtype)]
  )

  def candidate(m):
    z = _face(gram, u, m)
    violation = _violation(gram, u, z, m)
    v = u + jnp.clip(z, 0.0, None)
    return v, v @ gram @ v, violation

  v, values, violation = jax.vmap(candidate)(masks)
  ok = violation <= TOL * t * jnp.maximum(jnp.max(jnp.abs(u)), 1e-30)
  score = jnp.where(ok.any(), jnp.where(ok, values, jnp.inf), violation)
  return v[jnp.argmin(score)]


def _active_set(gram, u):
  """Lawson & Hanson's active-set iterations (module docstring)."""
  t = gram.shape[0]
  tol = TOL * t * jnp.maximum(jnp.max(jnp.abs(u)), 1e-30)

  def body(carry):
    z, m, _, i = carry
    # Not on the face's solution yet (m just grew or shrank): solve it.
    s = _face(gram, u, m)
    inside = jnp.all(jnp.where(m > 0, s > 0, True))
    shrink = (m > 0) & (s <= 0)
    ratios = jnp.where(shrink, z / jnp.maximum(z - s, 1e-30), 1.0)
    theta = jnp.clip(jnp.min(ratios), 0.0, 1.0)
    stepped = jnp.clip(z + theta * (s - z), 0.0, None)
    drop = shrink & (ratios <= theta)
    z_new = jnp.where(inside, jnp.clip(s, 0.0, None), stepped)
    m_new = jnp.where(inside, m, jnp.where(drop, 0.0, m))
    grad = gram @ (u + z_new)  # >= 0 outside the support at the optimum
    slack = jnp.where(m_new > 0, jnp.inf, grad)
    j = jnp.argmin(slack)
    add = inside & (slack[j] < -tol)
    m_new = jnp.where(add, m_new.at[j].set(1.0), m_new)
    return z_new, m_new, inside & ~add, i + 1

  def cond(carry):
    _, _, done, i = carry
    return ~done & (i < 4 * t + 16)

  zero = jnp.zeros((t,), gram.dtype)
  z, _, _, _ = lax.while_loop(
    cond, body, (zero, zero, jnp.array(False), jnp.array(0, jnp.int32))
  )
  return u + z
