"""FTRL-Proximal as an optax transformation, per coordinate.

McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013,
Algorithm 1 (per-coordinate FTRL-Proximal with L1 and L2): each coordinate
i keeps z_i and n_i (both 0 at first) and, with a gradient g_i,

  sigma_i = (sqrt(n_i + g_i^2) - sqrt(n_i)) / alpha
  z_i    += g_i - sigma_i * w_i
  n_i    += g_i^2
  w_i     = 0                                         if |z_i| <= lambda1
          = -(z_i - sgn(z_i) * lambda1)
            / ((beta + sqrt(n_i)) / alpha + lambda2)  otherwise

(the learning rate of a coordinate is alpha / (beta + sqrt(n_i)); lambda2
is the strength of (lambda2 / 2) ||w||^2, the paper's closed form; TF's
`FtrlOptimizer` doubles its l2 instead). `w_i` in the z update is the
param as it is (TensorFlow's `var`): equal to the closed form of the
previous step's z and n whenever the weights started at 0, as the paper's
do, and a non-zero initial value (an embedding's random init) enters z
instead of being dropped by the first step.

Laziness: with g_i = 0, sigma_i = 0, so z_i and n_i do not change and
neither does the closed form of w_i; a coordinate without gradient is left
exactly as it is (also one never updated, whose init the closed form of
z = n = 0 would otherwise zero). Applying the transformation densely to a
table whose untouched rows have zero gradient is therefore exactly the
lazy update of the touched rows only (`mtl.core.sparse.ftrl`, tested).

alpha is a constant, not a schedule: the closed form divides by it, so a
rate decayed to 0 would send every weight to 0.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class FtrlState(NamedTuple):
  """z and n of Algorithm 1, each shaped like the params."""

  z: optax.Updates
  n: optax.Updates


def ftrl_coordinates(w, z, n, g, *, alpha, beta, l1, l2):
  """One step of Algorithm 1, element-wise: (w_new, z_new, n_new).

  A coordinate with g == 0 keeps w, z and n (module docstring).
  """
  n_new = n + g * g
  sqrt_new = jnp.sqrt(n_new)
  sigma = (sqrt_new - jnp.sqrt(n)) / alpha
  z_new = z + g - sigma * w
  denom = (beta + sqrt_new) / alpha + l2
  denom = jnp.where(denom > 0, denom, 1.0)  # 0 only where g == 0 = n.
  closed = -(z_new - jnp.sign(z_new) * l1) / denom
  w_new = jnp.where(jnp.abs(z_new) <= l1, jnp.zeros_like(w), closed)
  touched = g != 0
  return (
    jnp.where(touched, w_new, w).astype(w.dtype),
    jnp.where(touched, z_new, z),
    jnp.where(touched, n_new, n),
  )


def _check(learning_rate, beta, l1, l2):
  if not learning_rate > 0:
    raise ValueError(f'ftrl: learning_rate is {learning_rate}, expected > 0')
  for name, v in (('beta', beta), ('l1', l1), ('l2', l2)):
    if not v >= 0:
      raise ValueError(f'ftrl: {name} is {v}, expected >= 0')


def ftrl(
  learning_rate: float,
  beta: float = 1.0,
  l1: float = 0.0,
  l2: float = 0.0,
) -> optax.GradientTransformation:
  """FTRL-Proximal (McMahan et al. 2013, Algorithm 1) as optax.

  Args:
    learning_rate: alpha, a constant > 0.
    beta: the per-coordinate rate's offset, alpha / (beta + sqrt(n)).
    l1: lambda1, L1 strength (|z| <= l1 puts a coordinate at exactly 0).
    l2: lambda2, L2 strength.

  Returns:
    A transformation whose updates are w_new - w (add them with
    `optax.apply_updates`); it needs `params`.
  """
  _check(learning_rate, beta, l1, l2)
  hyper = dict(alpha=learning_rate, beta=beta, l1=l1, l2=l2)

  def init(params):
    return FtrlState(
      z=jax.tree.map(jnp.zeros_like, params),
      n=jax.tree.map(jnp.zeros_like, params),
    )

  def update(grads, state, params=None):
    if params is None:
      raise ValueError(optax.NO_PARAMS_MSG)
    out = jax.tree.map(
      lambda w, z, n, g: ftrl_coordinates(w, z, n, g, **hyper),
      params,
      state.z,
      state.n,
      grads,
    )
    treedef = jax.tree.structure(params)
    w_new, z, n = (
      jax.tree.unflatten(treedef, [t[i] for t in treedef.flatten_up_to(out)])
      for i in range(3)
    )
    updates = jax.tree.map(lambda a, b: a - b, w_new, params)
    return updates, FtrlState(z=z, n=n)

  return optax.GradientTransformation(init, update)
