"""Random Loss Weighting: fresh random weights every step.

Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random Weighting: A
Litmus Test for Multi-Task Learning", TMLR 2022. Each step draws
lambda ~ p(lambda) and uses w = T * softmax-normalised lambda:

  'normal'     w = T * softmax(z), z ~ N(0, I)   (the paper's default)
  'dirichlet'  w = T * Dirichlet(1, ..., 1)
  'uniform'    w = T * u / sum(u), u ~ U(0, 1)

The paper (and LibMTL) use the normalised weights summing to 1; mtl scales
them by T so that their expectation is equal weighting (all ones) and the step
size matches `equal`'s. The draw is a pure function of (seed, step): a resumed
run draws the same weights. The weights multiply the incoming weights.
"""

import jax
import jax.numpy as jnp

from mtl.core.weighting.base import EmptyState, WeightingMethod
from mtl.errors import ConfigError

DISTRIBUTIONS = ('normal', 'dirichlet', 'uniform')


def rlw(distribution: str = 'normal', seed: int = 0) -> WeightingMethod:
  """RLW (Lin et al. 2022).

  Args:
    distribution: one of DISTRIBUTIONS.
    seed: the weights of step k come from fold_in(key(seed), k).
  """
  if distribution not in DISTRIBUTIONS:
    raise ConfigError(
      f'weighting rlw: distribution is {distribution!r}, expected one of '
      f'{", ".join(DISTRIBUTIONS)}'
    )

  def init(num_tasks):
    del num_tasks
    return EmptyState()

  def update(weights, state, *, step, **unused):
    t = weights.shape[0]
    key = jax.random.fold_in(jax.random.key(seed), step)
    if distribution == 'normal':
      p = jax.nn.softmax(jax.random.normal(key, (t,)))
    elif distribution == 'dirichlet':
      p = jax.random.dirichlet(key, jnp.ones((t,)))
    else:
      u = jax.random.uniform(key, (t,), minval=1e-6)
      p = u / jnp.sum(u)
    return weights * t * p, state

  return WeightingMethod(init, update)
