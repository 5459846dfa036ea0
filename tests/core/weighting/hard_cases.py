"""Hard gradient sets and the harness the float64 reference tests share.

Each set is explicit gradients g [T, P] (float64): opposed, 100-fold
scaled, nearly parallel, 5+ tasks, a zero gradient. A method sees what the
train step gives it, formed here in float32 as the step forms it: the Gram
matrix g g^T and the unit gradients' squared distances
(`task_grads.unit_distances`); the combined gradient d = c @ g is formed in
float64 from mtl's coefficients c.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mtl.core import task_grads


def opposed(rng, t=2, p=8, cos=-0.999):
  """g_1 and g_2 at cosine `cos`, norms 1 and 3; the others random."""
  g = rng.normal(size=(t, p))
  u = g[0] / np.linalg.norm(g[0])
  n = g[1] - (g[1] @ u) * u
  g[0] = u
  g[1] = 3.0 * (cos * u + np.sqrt(1 - cos**2) * n / np.linalg.norm(n))
  return g


def scaled(rng, t=3, p=8):
  """Norms spread over 100-fold."""
  return rng.normal(size=(t, p)) * np.logspace(0, 2, t)[:, None]


def nearly_parallel(rng, t=5, p=8, spread=3e-3):
  """cos >= ~1 - spread^2 (0.9999 at the default), norms 0.5 to 2."""
  base = rng.normal(size=p)
  noise = rng.normal(size=(t, p)) / np.sqrt(p)
  g = base + spread * np.linalg.norm(base) * noise
  return g * rng.uniform(0.5, 2.0, size=(t, 1))


def opposed_scaled(rng, t=4, p=8):
  """Opposed pair inside 100-fold scales, shuffled."""
  g = opposed(rng, t, p, cos=-0.99)
  return g * np.logspace(0, 2, t)[rng.permutation(t)][:, None]


def with_zero(rng, t=3, p=8):
  g = rng.normal(size=(t, p))
  g[1] = 0.0
  return g


SETS = {
  'opposed2': lambda r: opposed(r, 2),
  'opposed3': lambda r: opposed(r, 3),
  'opposed5': lambda r: opposed(r, 5, cos=-0.99),
  'scaled3': lambda r: scaled(r, 3),
  'scaled5': lambda r: scaled(r, 5),
  'opposed_scaled4': lambda r: opposed_scaled(r, 4),
  'opposed_scaled6': lambda r: opposed_scaled(r, 6),
  'parallel5': lambda r: nearly_parallel(r, 5),
  'parallel6_close': lambda r: nearly_parallel(r, 6, spread=1e-3),
  'random6': lambda r: r.normal(size=(6, 8)),
  'random10': lambda r: r.normal(size=(10, 12)),
}


def vector_sets(p=16):
  """Named explicit-gradient sets [T, p] (a function of the rng) for the
  methods that read task_grads vectors: the Gram sets' shapes at p
  parameters, with ten tasks and a zero gradient besides."""
  return {
    'opposed2': lambda r: opposed(r, 2, p),
    'opposed5': lambda r: opposed(r, 5, p, cos=-0.99),
    'scaled3': lambda r: scaled(r, 3, p),
    'scaled5': lambda r: scaled(r, 5, p),
    'opposed_scaled4': lambda r: opposed_scaled(r, 4, p),
    'opposed_scaled6': lambda r: opposed_scaled(r, 6, p),
    'parallel5': lambda r: nearly_parallel(r, 5, p),
    'parallel6_close': lambda r: nearly_parallel(r, 6, p, 1e-3),
    'random6': lambda r: r.normal(size=(6, p)),
    'random10': lambda r: r.normal(size=(10, p)),
    'zero_task': lambda r: with_zero(r, 3, p),
  }


def project_simplex(v):
  """argmin over the simplex of ||x - v||, float64: x = max(v - theta, 0)
  with sum x = 1, theta from the sorted values (Held, Wolfe and Crowder
  1974; Duchi et al., ICML 2008, Fig. 1)."""
  u = np.sort(v)[::-1]
  css = np.cumsum(u) - 1.0
  j = np.arange(1, len(v) + 1)
  rho = np.nonzero(u - css / j > 0)[0][-1]
  return np.maximum(v - css[rho] / (rho + 1), 0)


def gradients(name, seed=0):
  return SETS[name](np.random.default_rng(seed))


@functools.cache
def compiled(method):
  return jax.jit(method.update)


def inputs(g):
  """The train step's inputs from explicit gradients, in float32 (in one
  compiled program, as in the train step)."""
  return _inputs(jnp.asarray(g, jnp.float32))


@jax.jit
def _inputs(g32):
  gram = g32 @ g32.T
  norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))
  distances = task_grads.unit_distances({'w': g32}, norms)
  return dict(task_grad_gram=gram, task_grad_unit_distances=distances)


def run(method, g, *, losses=None, weights=None, state=None, step=0):
  """mtl's coefficients c, d = c @ g (float64) and the new state."""
  g = np.asarray(g, np.float64)
  t = len(g)
  state = method.init(t) if state is None else state
  c, state = compiled(method)(
    jnp.ones(t) if weights is None else jnp.asarray(weights, jnp.float32),
    state,
    losses=jnp.ones(t) if losses is None else jnp.asarray(losses, jnp.float32),
    step=step,
    **inputs(g),
  )
  c = np.asarray(c, np.float64)
  return c, c @ g, state


def rel_err(got, want):
  return np.linalg.norm(got - want) / np.linalg.norm(want)


def float32_limit(reference, g, draws=8):
  """(c, d): the largest relative change of the exact coefficients c =
  reference(g) and of d = c @ g when every Gram entry moves by up to one
  float32 ulp (2^-23 relative): what a float32 Gram matrix determines."""
  gram = g @ g.T
  want = reference(g)
  rng = np.random.default_rng(0)
  out_c, out_d = [0.0], [0.0]
  for _ in range(draws):
    xi = rng.uniform(-1.0, 1.0, gram.shape)
    moved = gram * (1.0 + 2.0**-23 * (xi + xi.T) / 2)
    values, vectors = np.linalg.eigh(moved)
    rows = vectors * np.sqrt(np.clip(values, 0.0, None))  # rows r r^T = moved
    c = reference(rows)
    out_c.append(rel_err(c, want))
    # d of the moved problem, in the original gradients' space.
    out_d.append(rel_err(c @ g, want @ g))
  return max(out_c), max(out_d)


def rounding_limit(c, g):
  """Relative change of d = c @ g when c is rounded to float32: d of
  opposed gradients is a small difference of large ones."""
  return (
    np.abs(c) @ np.linalg.norm(g, axis=1) * 2.0**-24 / np.linalg.norm(c @ g)
  )


def gradient_limit(reference, g, draws=8):
  """(c, d): the largest relative change of the exact c = reference(g) and
  of d = c @ g when every gradient entry moves by up to one float32 ulp (the
  train step's gradients are float32), or when c is rounded to float32 (d
  of opposed gradients is a small difference of large ones)."""
  want = reference(g)
  rng = np.random.default_rng(1)
  out_c, out_d = [0.0], [0.0]
  for _ in range(draws):
    c = reference(g * (1.0 + 2.0**-23 * rng.uniform(-1.0, 1.0, g.shape)))
    out_c.append(rel_err(c, want))
    out_d.append(rel_err(c @ g, want @ g))
  return max(out_c), max(max(out_d), rounding_limit(want, g))
