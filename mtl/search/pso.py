"""Particle-swarm optimisation (pure numpy), the interface of the ES.

Kennedy & Eberhart, "Particle Swarm Optimization", ICNN 1995: each particle
moves with a velocity pulled towards its own best position and the swarm's,

  v <- w v + c1 r1 (personal_best - x) + c2 r2 (global_best - x),  x <- x + v

with r1, r2 ~ U(0, 1) per coordinate. The inertia weight w is Shi &
Eberhart's ("A modified particle swarm optimizer", 1998); the defaults
w = 0.7298, c1 = c2 = 1.49618 are Clerc & Kennedy's constriction ("The
particle swarm - explosion, stability, and convergence", IEEE TEC 2002),
which converges without a velocity clamp; with `bounds` the velocity is
still clamped to the box's width and positions clipped to it.

It maximises; `ask` -> score every particle (mtl scores a generation as one
population run) -> `tell`, as `mtl.search.evolution.EvolutionStrategy`.
Deterministic by seed.
"""

from typing import NamedTuple

import numpy as np


class PSOState(NamedTuple):
  x: np.ndarray  # [n, d] positions to evaluate next
  v: np.ndarray  # [n, d] velocities
  personal: np.ndarray  # [n, d] each particle's best position
  personal_scores: np.ndarray  # [n], -inf before the first tell
  mean: np.ndarray  # [d] the swarm's best position (the start before)
  best_score: float
  generation: int

  @property
  def best(self) -> np.ndarray:
    return self.mean


class ParticleSwarm:
  """Global-best PSO with inertia (constriction coefficients by default).

  Args:
    dim: d, the search space's dimension.
    popsize: particles, >= 2.
    sigma: the initial spread around `init`'s mean without bounds (and the
      initial velocities' scale).
    seed: of the sampling rng.
    bounds: optional (low, high), scalars or [d]: particles start uniform in
      the box, stay in it, and velocities are clamped to its width.
    inertia, cognitive, social: w, c1, c2.
  """

  def __init__(
    self,
    dim: int,
    popsize: int,
    sigma: float = 0.5,
    seed: int = 0,
    *,
    bounds=None,
    inertia: float = 0.7298,
    cognitive: float = 1.49618,
    social: float = 1.49618,
  ):
    if dim < 1 or popsize < 2 or not sigma > 0:
      raise ValueError(
        f'ParticleSwarm: dim {dim}, popsize {popsize}, sigma {sigma}; '
        'expected dim >= 1, popsize >= 2, sigma > 0'
      )
    self.dim, self.popsize, self.sigma0 = dim, popsize, sigma
    self.w, self.c1, self.c2 = inertia, cognitive, social
    self.bounds = None
    if bounds is not None:
      low, high = (
        np.broadcast_to(np.asarray(b, float), (dim,)) for b in bounds
      )
      self.bounds = (low, high)
    self.rng = np.random.default_rng(seed)

  def init(self, mean=None) -> PSOState:
    n, d = self.popsize, self.dim
    mean = np.zeros(d) if mean is None else np.asarray(mean, float)
    if self.bounds is not None:
      low, high = self.bounds
      x = low + (high - low) * self.rng.random((n, d))
      v = (high - low) * (self.rng.random((n, d)) - 0.5) * 0.5
    else:
      x = mean + self.sigma0 * self.rng.standard_normal((n, d))
      v = self.sigma0 * self.rng.standard_normal((n, d)) * 0.5
    return PSOState(x, v, x.copy(), np.full(n, -np.inf), mean, -np.inf, 0)

  def ask(self, state: PSOState) -> np.ndarray:
    """[popsize, d]: the particles' current positions."""
    return state.x.copy()

  def tell(self, state: PSOState, candidates, scores) -> PSOState:
    """Updates the bests from the scores (higher is better), then moves."""
    scores = np.asarray(scores, float)
    if scores.shape != (self.popsize,) or not np.isfinite(scores).all():
      raise ValueError(
        f'ParticleSwarm.tell: scores {scores}, expected {self.popsize} '
        'finite numbers'
      )
    x = np.asarray(candidates, float)
    better = scores > state.personal_scores
    personal = np.where(better[:, None], x, state.personal)
    personal_scores = np.where(better, scores, state.personal_scores)
    i = int(np.argmax(personal_scores))
    best, best_score = state.mean, state.best_score
    if personal_scores[i] > best_score:
      best, best_score = personal[i].copy(), float(personal_scores[i])
    r1, r2 = self.rng.random((2, *x.shape))
    v = (
      self.w * state.v
      + self.c1 * r1 * (personal - x)
      + self.c2 * r2 * (best - x)
    )
    if self.bounds is not None:
      low, high = self.bounds
      v = np.clip(v, -(high - low), high - low)
      x = np.clip(x + v, low, high)
    else:
      x = x + v
    return PSOState(
      x, v, personal, personal_scores, best, best_score, state.generation + 1
    )
