"""A small evolution strategy over task-weight vectors (pure numpy).

The (mu/mu_w, lambda)-ES with cumulative step-size adaptation of Hansen &
Ostermeier, "Completely Derandomized Self-Adaptation in Evolution
Strategies", Evolutionary Computation 9(2), 2001 (the CMA-ES step-size rule,
with an isotropic covariance: for the handful of tasks of a multi-task model
the full covariance buys little and needs many more evaluations to learn).
It maximises; a generation is `ask` -> score every candidate (mtl scores a
generation as one population run) -> `tell`.

Task weights are searched as logits: w = T * softmax(theta), so every
candidate is a positive weight vector summing to T, the scale every
balancing method in mtl uses. (evosax, the JAX library of evolution
strategies, was measured instead: 0.3.2 only needs jax>=0.5, flax>=0.10 and
installs beside mtl's pins, but over the same budgets its GA and PSO found
worse optima than genetic.py and pso.py and its OpenES / CMA-ES only tied
this ES; experiments/search_libraries.py, docs/fusion.md.)
"""

from typing import NamedTuple

import numpy as np


class ESState(NamedTuple):
  mean: np.ndarray  # [d]
  sigma: float
  path: np.ndarray  # [d] evolution path of the step size
  generation: int


def weights_of(theta: np.ndarray) -> np.ndarray:
  """T * softmax(theta) over the last axis: positive, summing to T."""
  theta = np.asarray(theta, np.float64)
  e = np.exp(theta - theta.max(axis=-1, keepdims=True))
  return theta.shape[-1] * e / e.sum(axis=-1, keepdims=True)


class EvolutionStrategy:
  """(mu/mu_w, lambda)-ES with cumulative step-size adaptation.

  Args:
    dim: d, the search space's dimension.
    popsize: lambda, candidates per generation (>= 2).
    sigma: the initial step size.
    seed: of the sampling rng.
  """

  def __init__(self, dim: int, popsize: int, sigma: float = 0.5, seed: int = 0):
    if dim < 1 or popsize < 2 or not sigma > 0:
      raise ValueError(
        f'EvolutionStrategy: dim {dim}, popsize {popsize}, sigma {sigma}; '
        'expected dim >= 1, popsize >= 2, sigma > 0'
      )
    self.dim, self.popsize, self.sigma0 = dim, popsize, sigma
    self.mu = popsize // 2
    w = np.log(self.mu + 0.5) - np.log(np.arange(1, self.mu + 1))
    self.weights = w / w.sum()
    self.mu_eff = 1.0 / np.sum(self.weights**2)
    self.c_sigma = (self.mu_eff + 2) / (dim + self.mu_eff + 5)
    self.d_sigma = (
      1
      + 2 * max(0.0, np.sqrt((self.mu_eff - 1) / (dim + 1)) - 1)
      + self.c_sigma
    )
    self.chi = np.sqrt(dim) * (1 - 1 / (4 * dim) + 1 / (21 * dim**2))
    self.rng = np.random.default_rng(seed)

  def init(self, mean=None) -> ESState:
    mean = np.zeros(self.dim) if mean is None else np.asarray(mean, float)
    return ESState(mean, self.sigma0, np.zeros(self.dim), 0)

  def ask(self, state: ESState) -> np.ndarray:
    """[lambda, d] candidates ~ N(mean, sigma^2 I)."""
    self._z = self.rng.standard_normal((self.popsize, self.dim))
    return state.mean + state.sigma * self._z

  def tell(self, state: ESState, candidates, scores) -> ESState:
    """The next state from the candidates' scores (higher is better)."""
    scores = np.asarray(scores, float)
    if scores.shape != (self.popsize,) or not np.isfinite(scores).all():
      raise ValueError(
        f'EvolutionStrategy.tell: scores {scores}, expected {self.popsize} '
        'finite numbers'
      )
    z = (np.asarray(candidates) - state.mean) / state.sigma
    best = np.argsort(-scores)[: self.mu]
    step = self.weights @ z[best]
    mean = state.mean + state.sigma * step
    cs = self.c_sigma
    path = (1 - cs) * state.path + np.sqrt(cs * (2 - cs) * self.mu_eff) * step
    sigma = state.sigma * np.exp(
      (cs / self.d_sigma) * (np.linalg.norm(path) / self.chi - 1)
    )
    return ESState(mean, float(sigma), path, state.generation + 1)
