"""A real-coded genetic algorithm (pure numpy), the interface of the ES.

Holland, "Adaptation in Natural and Artificial Systems", 1975, and
Goldberg, "Genetic Algorithms in Search, Optimization and Machine
Learning", 1989: a population evolves by selection, crossover and
mutation. Real-coded here, as a (mu + lambda) GA:

- selection: binary tournaments among the parents (the best `popsize`
  candidates evaluated so far: elitism without re-evaluating anyone, so a
  generation is exactly `popsize` new evaluations, one population run);
- crossover: BLX-alpha blend (Eshelman & Schaffer, "Real-coded genetic
  algorithms and interval-schemata", FOGA 1993), each child uniform in the
  parents' box widened by alpha on each side, with probability `crossover`;
- mutation: each coordinate, with probability `mutation`, moves by
  N(0, sigma^2), sigma shrinking by `decay` a generation.

It maximises; `ask` -> score every candidate -> `tell`, as
`mtl.search.evolution.EvolutionStrategy`. Candidates are clipped to
`bounds` when given. Deterministic by seed (one numpy Generator).
"""

from typing import NamedTuple

import numpy as np


class GAState(NamedTuple):
  parents: np.ndarray  # [popsize, d], best first; empty before generation 1
  scores: np.ndarray  # [popsize] their scores
  sigma: float  # the mutation step
  mean: np.ndarray  # [d] the first generation's centre, then the best
  generation: int

  @property
  def best(self) -> np.ndarray:
    return self.parents[0] if len(self.parents) else self.mean

  @property
  def best_score(self) -> float:
    return float(self.scores[0]) if len(self.scores) else -np.inf


class GeneticAlgorithm:
  """(mu + lambda) real-coded GA: tournament, BLX-alpha, Gaussian mutation.

  Args:
    dim: d, the search space's dimension.
    popsize: candidates per generation (and parents kept), >= 2.
    sigma: the initial mutation step (and the first generation's spread
      around `init`'s mean when there are no bounds).
    seed: of the sampling rng.
    bounds: optional (low, high), scalars or [d]: the first generation is
      uniform in the box and every candidate is clipped to it.
    crossover: probability that a child is a blend of two parents.
    mutation: per-coordinate mutation probability (default 1/d, at least
      one coordinate in expectation).
    alpha: BLX widening.
    decay: sigma's factor per generation.
  """

  def __init__(
    self,
    dim: int,
    popsize: int,
    sigma: float = 0.5,
    seed: int = 0,
    *,
    bounds=None,
    crossover: float = 0.9,
    mutation: float | None = None,
    alpha: float = 0.5,
    decay: float = 0.97,
  ):
    mutation = 1.0 / dim if mutation is None else mutation
    if dim < 1 or popsize < 2 or not sigma > 0:
      raise ValueError(
        f'GeneticAlgorithm: dim {dim}, popsize {popsize}, sigma {sigma}; '
        'expected dim >= 1, popsize >= 2, sigma > 0'
      )
    if not (0 <= crossover <= 1 and 0 <= mutation <= 1 and 0 < decay <= 1):
      raise ValueError(
        f'GeneticAlgorithm: crossover {crossover}, mutation {mutation}, '
        f'decay {decay}; expected probabilities in [0, 1], decay in (0, 1]'
      )
    self.dim, self.popsize, self.sigma0 = dim, popsize, sigma
    self.crossover, self.mutation = crossover, mutation
    self.alpha, self.decay = alpha, decay
    self.bounds = None
    if bounds is not None:
      low, high = (
        np.broadcast_to(np.asarray(b, float), (dim,)) for b in bounds
      )
      self.bounds = (low, high)
    self.rng = np.random.default_rng(seed)

  def init(self, mean=None) -> GAState:
    mean = np.zeros(self.dim) if mean is None else np.asarray(mean, float)
    return GAState(np.empty((0, self.dim)), np.empty(0), self.sigma0, mean, 0)

  def _clip(self, x):
    return x if self.bounds is None else np.clip(x, *self.bounds)

  def ask(self, state: GAState) -> np.ndarray:
    """[popsize, d] new candidates."""
    n, d = self.popsize, self.dim
    if not len(state.parents):  # The first generation.
      if self.bounds is not None:
        low, high = self.bounds
        return low + (high - low) * self.rng.random((n, d))
      return state.mean + state.sigma * self.rng.standard_normal((n, d))
    parents, scores = state.parents, state.scores

    def tournament():
      a, b = self.rng.integers(0, len(parents), (2, n))
      return parents[np.where(scores[a] >= scores[b], a, b)]

    x, y = tournament(), tournament()
    lo, hi = np.minimum(x, y), np.maximum(x, y)
    span = hi - lo
    blend = (
      lo
      - self.alpha * span
      + (1 + 2 * self.alpha) * span * (self.rng.random((n, d)))
    )
    cross = self.rng.random((n, 1)) < self.crossover
    children = np.where(cross, blend, x)
    mutate = self.rng.random((n, d)) < self.mutation
    step = state.sigma * self.rng.standard_normal((n, d))
    return self._clip(children + np.where(mutate, step, 0.0))

  def tell(self, state: GAState, candidates, scores) -> GAState:
    """Keeps the best `popsize` of parents and candidates (higher wins)."""
    scores = np.asarray(scores, float)
    if scores.shape != (self.popsize,) or not np.isfinite(scores).all():
      raise ValueError(
        f'GeneticAlgorithm.tell: scores {scores}, expected {self.popsize} '
        'finite numbers'
      )
    pool = np.concatenate([state.parents, np.asarray(candidates, float)])
    pool_scores = np.concatenate([state.scores, scores])
    keep = np.argsort(-pool_scores, kind='stable')[: self.popsize]
    return GAState(
      pool[keep],
      pool_scores[keep],
      state.sigma * self.decay,
      pool[keep[0]],
      state.generation + 1,
    )
