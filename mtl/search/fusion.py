"""Score fusion: one ranking score from several predicted objectives.

A feed ranks by one number made of the model's predictions p_k (click,
like, watch time, ...). Two forms, both common in industrial rankers:

  weighted sum      s = sum_k w_k f_k(p_k),  f_k in TRANSFORMS
  weighted product  s = prod_k p_k ** a_k    (p_k > 0)

A product ranks exactly as the sum of `log` transforms with weights a_k
(exp is monotone), so only the sum's other transforms add new rankings;
both are kept because the product is how such formulas are usually written.
Ranking metrics ignore a positive scale of s, so weights are searched on the
simplex: w = K softmax(theta) (`mtl.search.evolution.weights_of`), which
every search below shares.

The weights are fitted to STORED predictions (no retraining): an objective
maps a score [N] to a number to maximise (e.g. GAUC of like, XAUC of watch
time, `mtl.core.ranking_metrics`), and `search` runs one of SEARCHES for a
budget of evaluations: 'grid' (the simplex at a step 1/m), 'es'
(`mtl.search.evolution`), 'ga' (`mtl.search.genetic`) or 'pso'
(`mtl.search.pso`). `front` keeps the Pareto set of two metrics over every
evaluated weight vector (`mtl.search.pareto`).
"""

import itertools
from collections.abc import Callable

import numpy as np

from mtl.search import evolution, genetic, pareto, pso

EPS = 1e-7


def _logit(p):
  p = np.clip(p, EPS, 1 - EPS)
  return np.log(p) - np.log1p(-p)


TRANSFORMS = {
  'identity': lambda p, power: p,
  'log': lambda p, power: np.log(np.maximum(p, EPS)),
  'logit': lambda p, power: _logit(p),
  'pow': lambda p, power: np.maximum(p, 0.0) ** power,
}


def fuse(
  preds,
  weights,
  *,
  kind: str = 'sum',
  transforms=None,
  power: float = 0.5,
) -> np.ndarray:
  """The fused score [N] of predictions [K, N].

  Args:
    preds: [K, N] predicted objectives (probabilities, positive values).
    weights: [K] w_k (sum) or exponents a_k (product).
    kind: 'sum' or 'product'.
    transforms: K names of TRANSFORMS (sum only; default identity).
    power: the exponent of 'pow'.
  """
  preds = np.asarray(preds, np.float64)
  weights = np.asarray(weights, np.float64)
  if preds.ndim != 2 or weights.shape != (preds.shape[0],):
    raise ValueError(
      f'fuse: preds {preds.shape} and weights {weights.shape}, expected '
      '[K, N] and [K]'
    )
  if kind == 'product':  # Computed as exp(sum a log p): no underflow.
    return np.exp(weights @ np.log(np.maximum(preds, EPS)))
  if kind != 'sum':
    raise ValueError(f"fuse: kind {kind!r}, expected 'sum' or 'product'")
  transforms = transforms or ('identity',) * len(preds)
  if len(transforms) != len(preds) or set(transforms) - set(TRANSFORMS):
    raise ValueError(
      f'fuse: transforms {transforms}, expected {len(preds)} of '
      f'{sorted(TRANSFORMS)}'
    )
  f = np.stack(
    [TRANSFORMS[t](p, power) for t, p in zip(transforms, preds, strict=True)]
  )
  return weights @ f


def simplex_grid(dim: int, steps: int) -> np.ndarray:
  """Every [dim] vector of multiples of 1/steps summing to 1, times dim."""
  rows = [
    c
    for c in itertools.product(range(steps + 1), repeat=dim)
    if sum(c) == steps
  ]
  return dim * np.asarray(rows, np.float64) / steps


def _optimizer(name, dim, popsize, seed, sigma):
  if name == 'es':
    return evolution.EvolutionStrategy(dim, popsize, sigma, seed=seed)
  bounds = (-4.0, 4.0)  # theta: weights within e^8 of each other.
  if name == 'ga':
    return genetic.GeneticAlgorithm(
      dim, popsize, sigma, seed, bounds=bounds, decay=0.95
    )
  return pso.ParticleSwarm(dim, popsize, sigma, seed, bounds=bounds)


SEARCHES = ('grid', 'es', 'ga', 'pso')


def search(
  name: str,
  objective: Callable[[np.ndarray], float],
  dim: int,
  *,
  budget: int,
  popsize: int = 10,
  seed: int = 0,
  sigma: float = 1.0,
) -> dict:
  """Searches weight vectors w (K softmax(theta)) maximising `objective(w)`.

  'grid' evaluates the finest simplex grid of at most `budget` points; the
  others `budget // popsize` generations of `popsize` candidates from equal
  weights. Returns {'name', 'weights' [E, K], 'scores' [E], 'best_weights',
  'best_score', 'evaluations', 'best_after' [E]: the best score after each
  evaluation}.
  """
  if name not in SEARCHES:
    raise ValueError(f'search: {name!r}, expected one of {SEARCHES}')
  if name == 'grid':
    steps = 1
    while len(simplex_grid(dim, steps + 1)) <= budget:
      steps += 1
    weights = simplex_grid(dim, steps)
    scores = np.array([objective(w) for w in weights])
  else:
    opt = _optimizer(name, dim, popsize, seed, sigma)
    state = opt.init()
    ws, ss = [], []
    for _ in range(max(budget // popsize, 1)):
      theta = opt.ask(state)
      w = evolution.weights_of(theta)
      s = np.array([objective(x) for x in w])
      state = opt.tell(state, theta, s)
      ws.append(w)
      ss.append(s)
    weights, scores = np.concatenate(ws), np.concatenate(ss)
  best = int(np.argmax(scores))
  return {
    'name': name,
    'weights': weights,
    'scores': scores,
    'best_weights': weights[best],
    'best_score': float(scores[best]),
    'evaluations': len(scores),
    'best_after': np.maximum.accumulate(scores),
  }


def front(weights, metric_a, metric_b):
  """The Pareto set of weight vectors on two metrics to maximise.

  Returns (weights [F, K], points [F, 2]) sorted by the first metric.
  """
  weights = np.asarray(weights, np.float64)
  points = np.array([[metric_a(w), metric_b(w)] for w in weights])
  keep = pareto.non_dominated(points)
  order = np.argsort(points[keep, 0])
  return weights[keep][order], points[keep][order]
