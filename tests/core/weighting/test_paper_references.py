"""Nash-MTL, CAGrad and IMTL-G against float64 references written from the
papers, independent of mtl's code.

Each reference works on the explicit gradients g [T, P] in float64 numpy:

  Nash-MTL (Navon et al., ICML 2022): alpha > 0 with G alpha = 1 / alpha
    (their eq. 2, G_ij = <g_i, g_j> unnormalised), as the minimiser of
    a^T G a / 2 - sum log a by Newton's method with backtracking (a > 0),
    checked to a residual |a * (G a) - 1| < 1e-9.
  CAGrad (Liu et al., NeurIPS 2021): w* = argmin over the simplex of
    <g_w, g0> + c ||g0|| ||g_w|| (the released code's c ||g0||), by brute
    force over the faces of the simplex: on every face a damped Newton solve
    on its affine hull, keeping the stationary points inside the face; the
    best is certified by its Frank-Wolfe gap (<= 1e-10 of the scale).
  IMTL-G (Liu et al., ICLR 2021): their closed form alpha_{2:T} = g_1 U^T
    (D U^T)^{-1}, alpha_1 = 1 - sum alpha_{2:T}, on the explicit vectors.

mtl sees only the float32 Gram matrix (what the train step computes; IMTL-G
also the unit gradients' squared distances, formed from the gradients) and
returns the coefficients c of d = sum_t c_t g_t; d is formed here in float64
from the explicit gradients. Gradient sets for T in {2, 3, 5}: conflicting,
nearly parallel (cos >= 0.9999), with 100-fold scale differences and (CAGrad)
with the optimum on a face of the simplex. d must be within 1e-4 relative of
the reference; where a float32 Gram cannot carry that much (nearly parallel
gradients), the test states the limit and why (LIMIT_FACTOR). Each paper's
defining property is checked as well: Nash-MTL's G alpha = 1 / alpha and
||d|| = sqrt(T) at every scale, IMTL-G's equal projections d.u_t, CAGrad's
objective at its minimum (no simplex point does better, in numpy).
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.weighting.cagrad import cagrad as _cagrad
from mtl.core.weighting.imtl import imtl_g as _imtl_g
from mtl.core.weighting.nash_mtl import nash_mtl as _nash_mtl
from tests.core.weighting import hard_cases

# One method (so one compilation per task count) per set of arguments.
cagrad = functools.cache(_cagrad)
imtl_g = functools.cache(_imtl_g)
nash_mtl = functools.cache(_nash_mtl)

RTOL = 1e-4
# Nearly parallel gradients: the train step's Gram matrix is float32, its
# entries rounded to half an ulp (6e-8 relative), which leaves 1 - cos_ij
# known to ~1e-7 only; at 1 - cos ~ 1e-4 the answer can move by far more
# than 1e-4 (IMTL-G at T = 5 by up to ~10%). There d must be within 1e-4 +
# LIMIT_FACTOR times `float32_limit`: the largest change of the exact answer
# when the Gram's entries move by one float32 ulp (the error of the exact
# solution of the rounded Gram; mtl's own float32 arithmetic adds a few ulp).
LIMIT_FACTOR = 4.0


def run(method, g, *, weights=None, state=None, step=0):
  """mtl's coefficients c, d = c @ g (float64) and the new state."""
  g = np.asarray(g, np.float64)
  t = g.shape[0]
  state = method.init(t) if state is None else state
  c, state = _compiled(method)(
    jnp.ones(t) if weights is None else jnp.asarray(weights, jnp.float32),
    state,
    losses=jnp.ones(t),
    step=step,
    **hard_cases.inputs(g),  # the Gram matrix and the unit distances
  )
  c = np.asarray(c, np.float64)
  return c, c @ g, state


@functools.cache
def _compiled(method):
  return jax.jit(method.update)


def rel_err(got, want):
  return np.linalg.norm(got - want) / np.linalg.norm(want)


def cosines(g):
  u = g / np.linalg.norm(g, axis=1, keepdims=True)
  return u @ u.T


# ---- gradient sets ---------------------------------------------------------


def conflicting(rng, t, p=10):
  """g_1 and g_2 at cos -0.6, the others random."""
  g = rng.normal(size=(t, p))
  n = g[1] - (g[1] @ g[0]) / (g[0] @ g[0]) * g[0]  # orthogonal to g_1
  g[1] = np.linalg.norm(g[1]) * (
    -0.6 * g[0] / np.linalg.norm(g[0]) + 0.8 * n / np.linalg.norm(n)
  )
  return g


def nearly_parallel(rng, t, p=10):
  base = rng.normal(size=p)
  noise = rng.normal(size=(t, p)) / np.sqrt(p)
  g = base + 6e-3 * np.linalg.norm(base) * noise
  g = g * rng.uniform(0.5, 2.0, size=(t, 1))
  assert cosines(g).min() >= 0.9999
  return g


def scaled(rng, t, p=10):
  """Norms spread over 100-fold."""
  return rng.normal(size=(t, p)) * np.logspace(0, 2, t)[:, None]


SETS = {'conflicting': conflicting, 'scaled': scaled}
CASES = [(s, t, seed) for s in SETS for t in (2, 3, 5) for seed in range(2)]
PARALLEL_CASES = [(t, seed) for t in (2, 3, 5) for seed in range(2)]


# ---- references (float64 numpy, from the papers) ---------------------------


def nash_reference(g):
  """alpha > 0 with G alpha = 1 / alpha, G unnormalised (Navon et al.)."""
  gram = g @ g.T

  def f(a):  # strictly convex; its minimiser solves G a = 1 / a
    return 0.5 * a @ gram @ a - np.sum(np.log(a))

  a = 1.0 / np.sqrt(np.diag(gram))
  last = np.inf
  for _ in range(500):
    grad = gram @ a - 1.0 / a
    step = np.linalg.solve(gram + np.diag(1.0 / a**2), grad)
    decrement = grad @ step
    if decrement < 1e-2:  # Newton decrement < 0.1: full steps converge
      a = a - step  # quadratically (f is self-concordant), a stays > 0
      # Done at 1e-30, or once float64 rounding stops it from shrinking
      # (quadratic convergence halves the digits left each step).
      if decrement < 1e-30 or decrement >= last / 4:
        break
      last = decrement
      continue
    s = 1.0  # Backtracking (Armijo), staying in a > 0.
    while (a - s * step <= 0).any() or f(a - s * step) > f(a) - s / 4 * (
      grad @ step
    ):
      s /= 2
    a = a - s * step
  assert np.max(np.abs(a * (gram @ a) - 1.0)) < 1e-9
  return a


def cagrad_objective(gram, c_param):
  t = len(gram)
  e = np.full(t, 1.0 / t)
  radius = c_param * np.sqrt(e @ gram @ e)

  def f(w):
    return w @ gram @ e + radius * np.sqrt(max(w @ gram @ w, 0.0))

  def grad(w):
    return gram @ e + radius * gram @ w / np.sqrt(w @ gram @ w)

  return f, grad, radius


def frank_wolfe_gap(grad, w):
  """max over the simplex of <grad F(w), w - v>: >= F(w) - F* (convexity)."""
  gw = grad(w)
  return gw @ w - gw.min()


def cagrad_weights_reference(g, c_param):
  """w* over the simplex, brute force over its faces (float64)."""
  gram = g @ g.T
  t = len(gram)
  scale = np.max(np.diag(gram))
  f, grad, radius = cagrad_objective(gram, c_param)
  candidates = list(np.eye(t))  # the vertices
  for size in range(2, t + 1):
    for s in itertools.combinations(range(t), size):
      s = list(s)
      # Damped Newton on the face's affine hull {sum w_S = 1}, basis z,
      # from its centre; kept if it stops stationary inside the face.
      z = np.zeros((t, size - 1))
      z[s[:-1], np.arange(size - 1)] = 1.0
      z[s[-1], :] = -1.0
      w = np.zeros(t)
      w[s] = 1.0 / size
      for _ in range(100):
        q2 = w @ gram @ w
        gr = z.T @ grad(w)
        if np.linalg.norm(gr) < 1e-13 * scale:
          break
        hess = radius * (gram - np.outer(gram @ w, gram @ w) / q2)
        step = z @ np.linalg.lstsq(z.T @ hess @ z / np.sqrt(q2), gr)[0]
        # Backtracking; near the minimum, where F's changes fall below
        # float64's resolution, the full (quadratically convergent) step.
        length, slack = 1.0, 1e-13 * (abs(f(w)) + scale)
        while not f(w - length * step) < f(w) + slack and length > 1e-12:
          length /= 2
        w = w - length * step
        if np.abs(w).max() > 1e6 or w @ gram @ w < 1e-20 * scale:
          break  # Unbounded on the hull, or g_w -> 0: not a minimum here.
      inside = (w >= -1e-12).all() and np.abs(w).max() <= 1e6
      if inside and np.linalg.norm(z.T @ grad(w)) < 1e-9 * scale:
        candidates.append(np.clip(w, 0.0, None) / np.clip(w, 0.0, None).sum())
  best = min(candidates, key=f)
  assert frank_wolfe_gap(grad, best) < 1e-10 * scale, 'not the minimum'
  return best


def cagrad_reference(g, c_param=0.4, rescale=1):
  """mtl's c for CAGrad's d (their eq., the released code's rescale): d =
  g0 + radius g_w* / ||g_w*||, c = T (e + radius / ||g_w*|| w*) / divisor."""
  w = cagrad_weights_reference(g, c_param)
  t = len(g)
  _, _, radius = cagrad_objective(g @ g.T, c_param)
  coefficients = 1.0 / t + radius / np.linalg.norm(w @ g) * w
  return t * coefficients / DIVISORS[rescale](c_param)


def imtl_reference(g):
  """IMTL-G's alpha (sums to 1), the paper's closed form in float64; mtl's
  c is T alpha."""
  u = g / np.linalg.norm(g, axis=1, keepdims=True)
  d_mat = g[0] - g[1:]
  u_mat = u[0] - u[1:]
  rest = g[0] @ u_mat.T @ np.linalg.inv(d_mat @ u_mat.T)
  return np.concatenate([[1.0 - rest.sum()], rest])


DIVISORS = {0: lambda c: 1.0, 1: lambda c: 1.0 + c**2, 2: lambda c: 1.0 + c}


def mtl_cagrad_weights(c, c_param, rescale=1):
  """w recovered from mtl's c = T (e + lambda w) / divisor."""
  t = len(c)
  w = c * DIVISORS[rescale](c_param) / t - 1.0 / t
  return w / w.sum()


def float32_limit(reference, g, draws=8, of='d'):
  """Largest relative change of the exact d = reference(g) @ g (of='c':
  of the coefficients reference(g)) when every Gram entry moves by up to
  one float32 ulp (2^-23 relative)."""
  gram = g @ g.T
  form = (lambda c: c @ g) if of == 'd' else (lambda c: c)
  want = form(reference(g))
  rng = np.random.default_rng(0)
  out = []
  for _ in range(draws):
    xi = rng.uniform(-1.0, 1.0, gram.shape)
    rows = np.linalg.cholesky(gram * (1.0 + 2.0**-23 * (xi + xi.T) / 2))
    out.append(rel_err(form(reference(rows)), want))  # rows: gradients of it
  return max(out)


# ---- the issue's three worked examples -------------------------------------


def test_issue_example_nash_orthogonal_gradients():
  # g1 = (3, 0), g2 = (0, 0.5): G = diag(9, 0.25), alpha_i = 1 / ||g_i||,
  # alpha = (1/3, 2), d = (1, 1), ||d|| = sqrt(T). The old code gave
  # alpha = (1.0002, 6.0010), d = (3.0006, 3.0005): sqrt(||G||_F) too large.
  g = np.array([[3.0, 0.0], [0.0, 0.5]])
  np.testing.assert_allclose(nash_reference(g), [1 / 3, 2.0], rtol=1e-12)
  alpha, d, _ = run(nash_mtl(), g)
  np.testing.assert_allclose(alpha, [1 / 3, 2.0], rtol=RTOL)
  np.testing.assert_allclose(d, [1.0, 1.0], rtol=RTOL)
  _, d10, _ = run(nash_mtl(), 10 * g)  # the old code: d * 10
  np.testing.assert_allclose(d10, [1.0, 1.0], rtol=RTOL)


def test_issue_example_cagrad_diagonal():
  # g = diag(100, 1), c = 0.4: w* = (0, 1) exactly (a vertex), so
  # d = (g0 + 0.4 ||g0|| (0, 1)) / 1.16 and T d = (86.2069, 35.3466).
  # The old Adam-on-softmax solve gave T d = (96.96, 33.63).
  g = np.diag([100.0, 1.0])
  g0 = g.mean(0)
  exact = 2 * (g0 + 0.4 * np.linalg.norm(g0) * np.array([0.0, 1.0])) / 1.16
  np.testing.assert_allclose(exact, [86.2069, 35.3466], rtol=1e-5)
  np.testing.assert_allclose(
    cagrad_weights_reference(g, 0.4), [0.0, 1.0], atol=1e-12
  )
  np.testing.assert_allclose(cagrad_reference(g) @ g, exact, rtol=1e-12)
  _, d, _ = run(cagrad(c=0.4), g)
  np.testing.assert_allclose(d, exact, rtol=RTOL)


def test_issue_example_imtl_nearly_parallel_two_tasks():
  # g2 = 2 g1 rotated to cos = 0.99999: alpha = (2/3, 1/3) at any angle
  # (alpha_t ~ 1 / ||g_t|| for T = 2). The old code gave (0.650, 0.350).
  theta = np.arccos(0.99999)
  g = np.array([[1.0, 0.0], [2 * np.cos(theta), 2 * np.sin(theta)]])
  np.testing.assert_allclose(imtl_reference(g), [2 / 3, 1 / 3], rtol=1e-9)
  c, _, _ = run(imtl_g(), g)
  np.testing.assert_allclose(c / 2, [2 / 3, 1 / 3], rtol=RTOL)


# ---- Nash-MTL --------------------------------------------------------------


@pytest.mark.parametrize('kind, t, seed', CASES)
def test_nash_matches_the_reference(kind, t, seed):
  g = SETS[kind](np.random.default_rng(seed), t)
  alpha, d, _ = run(nash_mtl(), g)
  want = nash_reference(g)
  assert rel_err(d, want @ g) < RTOL
  np.testing.assert_allclose(alpha, want, rtol=RTOL)


@pytest.mark.parametrize('t, seed', PARALLEL_CASES)
def test_nash_nearly_parallel(t, seed):
  g = nearly_parallel(np.random.default_rng(seed), t)
  _, d, _ = run(nash_mtl(), g)
  limit = float32_limit(nash_reference, g)
  assert rel_err(d, nash_reference(g) @ g) < RTOL + LIMIT_FACTOR * limit


@pytest.mark.parametrize('t', [2, 3, 5])
@pytest.mark.parametrize('scale', [1e-3, 1.0, 1e3])
def test_nash_bargaining_condition_and_scale_invariance(t, scale):
  g = scale * conflicting(np.random.default_rng(7), t)
  alpha, d, _ = run(nash_mtl(), g)
  gram = g @ g.T
  # G alpha = 1 / alpha on the unnormalised G, so ||d||^2 = alpha^T G alpha
  # = sum_t alpha_t (G alpha)_t = T at every scale of the gradients.
  np.testing.assert_allclose(alpha * (gram @ alpha), 1.0, rtol=RTOL)
  np.testing.assert_allclose(np.linalg.norm(d), np.sqrt(t), rtol=RTOL)
  _, d1, _ = run(nash_mtl(), g / scale)
  assert rel_err(d, d1) < RTOL


def test_nash_strong_conflict_from_a_cold_start():
  # cos(g1, g2) = -0.99: alpha ~ 1 / sqrt(1 - |cos|), far from the start.
  g = np.array([[1.0, 0.0, 0.0], [-0.99, np.sqrt(1 - 0.99**2), 0.0]])
  g = np.concatenate([g, [[0.1, 0.2, 3.0]]])
  alpha, d, _ = run(nash_mtl(), g)
  want = nash_reference(g)
  assert rel_err(d, want @ g) < RTOL + LIMIT_FACTOR * float32_limit(
    nash_reference, g
  )


def test_nash_update_every_reuses_the_solution_across_scales():
  rng = np.random.default_rng(3)
  method = nash_mtl(update_every=2)
  g = conflicting(rng, 3)
  a0, _, state = run(method, g, step=0)
  a1, _, _ = run(method, 10 * g, step=1, state=state)
  np.testing.assert_allclose(a1, a0)  # alpha reused as is between solves


@pytest.mark.parametrize(
  'g',
  [
    [[1.0, 2.0], [-2.0, -4.0]],  # opposed
    [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2], [0.3, -1.0]],  # 0 inside the cone
  ],
)
def test_nash_without_a_solution_keeps_the_previous_alpha(g):
  # Some a > 0 has sum_t a_t g_t = 0: G alpha = 1 / alpha has no solution
  # (the released code's solver fails and it keeps its previous alpha).
  g = np.asarray(g)
  t = len(g)
  previous = np.random.default_rng(0).normal(size=(t, 5))
  a0, _, state = run(nash_mtl(), previous)
  a1, _, _ = run(nash_mtl(), g, state=state, step=1)
  np.testing.assert_allclose(a1, a0)


# ---- CAGrad ----------------------------------------------------------------


def face_optimum(rng, t, p=10):
  """One gradient 30-100x the others: its weight at the optimum is 0."""
  g = rng.normal(size=(t, p))
  g[0] *= rng.uniform(30.0, 100.0)
  return g


@pytest.mark.parametrize('kind, t, seed', CASES)
@pytest.mark.parametrize('c_param', [0.4, 0.8])
def test_cagrad_matches_the_reference(kind, t, seed, c_param):
  g = SETS[kind](np.random.default_rng(seed), t)
  _, d, _ = run(cagrad(c=c_param), g)
  assert rel_err(d, cagrad_reference(g, c_param) @ g) < RTOL


@pytest.mark.parametrize('t', [2, 3, 5])
@pytest.mark.parametrize('seed', range(2))
@pytest.mark.parametrize('rescale', [0, 1, 2])
def test_cagrad_optimum_on_a_face(t, seed, rescale):
  g = face_optimum(np.random.default_rng(seed), t)
  assert cagrad_weights_reference(g, 0.4)[0] == 0.0  # on a face
  _, d, _ = run(cagrad(c=0.4, rescale=rescale), g)
  assert rel_err(d, cagrad_reference(g, 0.4, rescale) @ g) < RTOL


@pytest.mark.parametrize('t, seed', PARALLEL_CASES)
def test_cagrad_nearly_parallel(t, seed):
  g = nearly_parallel(np.random.default_rng(seed), t)
  c, d, _ = run(cagrad(c=0.4), g)
  want = cagrad_reference(g)
  limit = float32_limit(cagrad_reference, g)
  assert rel_err(d, want @ g) < RTOL + LIMIT_FACTOR * limit
  # d is mostly the mean gradient here, whatever w; the coefficients show
  # the inner solution (w* a vertex: the old softmax left ~0.003 elsewhere).
  limit = float32_limit(cagrad_reference, g, of='c')
  assert rel_err(c, want) < RTOL + LIMIT_FACTOR * limit


def check_cagrad_minimum(g, coefficients, rng):
  """No feasible point improves mtl's w: random simplex points and the
  vertices, and the Frank-Wolfe gap bounds F(w) - F* over all of them."""
  t = len(g)
  f, grad, _ = cagrad_objective(g @ g.T, 0.4)
  w = mtl_cagrad_weights(coefficients, 0.4)
  assert (w >= -1e-6).all()
  w = np.clip(w, 0.0, None) / np.clip(w, 0.0, None).sum()
  points = np.concatenate([rng.dirichlet(np.ones(t), 1000), np.eye(t)])
  scale = np.max(np.diag(g @ g.T))
  assert f(w) <= min(f(v) for v in points) + 1e-6 * scale
  assert frank_wolfe_gap(grad, w) < 1e-4 * scale


@pytest.mark.parametrize(
  'kind, t', [('conflicting', 3), ('scaled', 5), ('face', 3), ('face', 5)]
)
def test_cagrad_objective_is_at_its_minimum(kind, t):
  rng = np.random.default_rng(11)
  g = face_optimum(rng, t) if kind == 'face' else SETS[kind](rng, t)
  c, _, _ = run(cagrad(c=0.4), g)
  check_cagrad_minimum(g, c, rng)


@pytest.mark.parametrize('kind', ['conflicting', 'face'])
def test_cagrad_more_than_eight_tasks_reaches_the_minimum(kind):
  # T = 10: projected gradient descent, then the exact solve on its face.
  rng = np.random.default_rng(5)
  g = face_optimum(rng, 10, 16) if kind == 'face' else conflicting(rng, 10)
  c, d, _ = run(cagrad(c=0.4), g)
  check_cagrad_minimum(g, c, rng)
  assert rel_err(d, cagrad_reference(g) @ g) < RTOL


# ---- IMTL-G ----------------------------------------------------------------


def imtl_coefficients(g):
  return len(g) * imtl_reference(g)


@pytest.mark.parametrize('kind, t, seed', CASES)
def test_imtl_matches_the_reference(kind, t, seed):
  g = SETS[kind](np.random.default_rng(seed), t)
  c, d, _ = run(imtl_g(), g)
  assert rel_err(d, imtl_coefficients(g) @ g) < RTOL
  np.testing.assert_allclose(c.sum(), t, rtol=RTOL)


@pytest.mark.parametrize('t, seed', PARALLEL_CASES)
def test_imtl_nearly_parallel(t, seed):
  g = nearly_parallel(np.random.default_rng(seed), t)
  _, d, _ = run(imtl_g(), g)
  limit = float32_limit(imtl_coefficients, g)
  assert rel_err(d, imtl_coefficients(g) @ g) < RTOL + LIMIT_FACTOR * limit


@pytest.mark.parametrize('kind, t, seed', CASES)
def test_imtl_projections_on_the_unit_gradients_are_equal(kind, t, seed):
  g = SETS[kind](np.random.default_rng(seed), t)
  _, d, _ = run(imtl_g(), g)
  u = g / np.linalg.norm(g, axis=1, keepdims=True)
  proj = u @ d
  np.testing.assert_allclose(proj, proj.mean(), rtol=RTOL)


@pytest.mark.parametrize('angle_cos', [0.99, 0.9999, 0.99999])
def test_imtl_two_tasks_hundredfold_scale_any_angle(angle_cos):
  # T = 2: alpha = (||g_2||, ||g_1||) / (||g_1|| + ||g_2||) at any angle.
  theta = np.arccos(angle_cos)
  g = np.array([[1.0, 0.0], [100 * np.cos(theta), 100 * np.sin(theta)]])
  c, d, _ = run(imtl_g(), g)
  np.testing.assert_allclose(c / 2, [100 / 101, 1 / 101], rtol=RTOL)
  u = g / np.linalg.norm(g, axis=1, keepdims=True)
  np.testing.assert_allclose(u @ d, (u @ d).mean(), rtol=RTOL)


def test_imtl_parallel_gradients_take_the_parallel_limit():
  # Exactly parallel, norms 1, 3, 10: every alpha projects equally, and
  # the nearly parallel solution tends to alpha ~ 1 / ||g_t||; float32
  # rounding of the Gram matrix must not pick a noisy one instead.
  rng = np.random.default_rng(2)
  g = np.array([1.0, 3.0, 10.0])[:, None] * rng.normal(size=(1, 10))
  c, d, _ = run(imtl_g(), g)
  want = 1 / np.array([1.0, 3.0, 10.0])
  np.testing.assert_allclose(c, 3 * want / want.sum(), rtol=RTOL)
