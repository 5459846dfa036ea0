"""Gradient Vaccine: raise each pair's gradient cosine to an EMA target.

Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021,
Sec. 3.2 and Algorithm 1. For each task i, over the other tasks j in a
random order, with phi_ij = cos(g_i', g_j) (g_i' the current, possibly
vaccinated, gradient of task i; g_j the original) and the target phi_hat_ij
of the state: if phi_ij < phi_hat_ij,

  g_i' <- g_i' + ||g_i'|| (phi_hat_ij sqrt(1 - phi_ij^2)
                           - phi_ij sqrt(1 - phi_hat_ij^2))
                 / (||g_j|| sqrt(1 - phi_hat_ij^2)) g_j,          (Eq. 2)

which sets cos(g_i', g_j) to phi_hat_ij exactly; then, for every visited
pair,

  phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij,              (Eq. 3)

from phi_hat = 0 (with targets of 0, the first step is PCGrad). The update
is sum_i g_i'. As in `pcgrad`, every g_i' is a combination of the original
gradients, tracked as a row of coefficients C [T, T]: ||g_i'||^2 = C_i G
C_i^T and <g_i', g_j> = (C G)_ij need only the Gram matrix, and the method
returns the column sums of C. The order is a pure function of (seed, step,
i).

Differences. The paper also vaccinates at finer granularities (one
phi_hat_ij per layer or per parameter matrix); mtl works on the whole shared
group at once (LibMTL's group_type=0), since the train step gives one Gram
matrix. LibMTL (1.1.5 and later) updates phi_hat_ij only when it
vaccinates, so its targets start at 0 and can only fall; Algorithm 1 updates
them for every pair, which mtl follows (the two agree while every pair is
vaccinated at every step: tests/core/weighting/test_libmtl_fixtures.py). beta
defaults to the paper's 1e-2 (LibMTL's default: 0.5).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl.core.weighting import gram as gram_lib
from mtl.core.weighting.base import WeightingMethod
from mtl.errors import ConfigError


class GradVacState(NamedTuple):
  targets: jnp.ndarray  # phi_hat [T, T], row i: task i against task j


def gradvac(beta: float = 0.01, seed: int = 0) -> WeightingMethod:
  """GradVac (Wang et al. 2021) on the backbone gradients.

  Args:
    beta: EMA rate of the targets, in (0, 1] (the paper: 1e-2).
    seed: the order of step k comes from fold_in(key(seed), k).
  """
  if not 0 < beta <= 1:
    raise ConfigError(f'weighting gradvac: beta is {beta}, expected in (0, 1]')
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise ConfigError(f'weighting gradvac: seed is {seed!r}, expected an int')

  def init(num_tasks):
    return GradVacState(jnp.zeros((num_tasks, num_tasks), jnp.float32))

  def update(weights, state, *, task_grad_gram, step, **unused):
    g = gram_lib.weighted(task_grad_gram.astype(jnp.float32), weights)
    # Scale-free: cosines and coefficients do not change with G's scale.
    g = g / jnp.maximum(jnp.max(jnp.diag(g)), 1e-30)
    t = g.shape[0]
    key = jax.random.fold_in(jax.random.key(seed), step)
    orders = jax.vmap(
      lambda i: jax.random.permutation(jax.random.fold_in(key, i), t)
    )(jnp.arange(t))
    norms = jnp.sqrt(jnp.maximum(jnp.diag(g), 0.0))
    live = jnp.diag(g) > gram_lib.DEAD
    eye = jnp.eye(t, dtype=jnp.float32)

    def visit(i, k, carry):
      """Task i against task orders[i, k]: Eq. 2 if below target, Eq. 3."""
      c, targets = carry
      j = orders[i, k]
      cg = c @ g
      norm_i = jnp.sqrt(jnp.maximum(cg @ c, 0.0))
      ok = (j != i) & live[j] & (norm_i > 0)
      phi = jnp.clip(cg[j] / jnp.maximum(norm_i * norms[j], 1e-30), -1.0, 1.0)
      target = targets[i, j]
      sin_target = jnp.sqrt(jnp.maximum(1.0 - target**2, 1e-12))
      sin_phi = jnp.sqrt(jnp.maximum(1.0 - phi**2, 0.0))
      amount = (
        norm_i
        * (target * sin_phi - phi * sin_target)
        / (jnp.maximum(norms[j], 1e-30) * sin_target)
      )
      c = c + jnp.where(ok & (phi < target), amount, 0.0) * eye[j]
      ema = jnp.where(ok, (1 - beta) * target + beta * phi, target)
      return c, targets.at[i, j].set(ema)

    def task(i, carry):
      total, targets = carry
      c, targets = lax.fori_loop(
        0, t, functools.partial(visit, i), (eye[i], targets)
      )
      return total + c, targets

    start = (jnp.zeros((t,), jnp.float32), state.targets)
    coefficients, targets = lax.fori_loop(0, t, task, start)
    return coefficients * weights, GradVacState(targets)

  return WeightingMethod(
    init, update, frozenset({'task_grad_gram'}), combines_gradients=True
  )
