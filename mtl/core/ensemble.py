"""Model fusion: ensembles of predictions and soups of weights (pure).

Prediction ensembles (any models scoring the same rows; [M, N] one task's
predictions of M models, probabilities for a binary task):

- `average`: the (weighted) mean of the members' predictions;
- `fit_weights`: simplex weights minimising the validation log loss
  (binary) or squared error (regression) of that mean, by exponentiated
  gradient (Kivinen & Warmuth, "Exponentiated gradient versus gradient
  descent for linear predictors", 1997): both losses are convex in w;
- `rank_average`: the mean of each member's normalised ranks, for ranking
  metrics only (it is no probability).

Weight averaging of members of one architecture ("model soups", Wortsman et
al., "Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time", ICML 2022):

- `uniform_soup`: the mean of the members' params;
- `greedy_soup`: members sorted by their own validation score, each added
  to the soup only if the soup's validation score does not drop (the
  paper's Recipe 1). Soups need members in one basin of the loss, which
  the paper gets by fine-tuning one pretrained model: members trained from
  independent initialisations generally do not average (permutation
  symmetry).
"""

from collections.abc import Callable, Sequence

import jax
import numpy as np

EPS = 1e-7


def average(preds, weights=None) -> np.ndarray:
  """The mean [N] of predictions [M, N], weighted by `weights` [M]."""
  preds = np.asarray(preds, np.float64)
  if weights is None:
    return preds.mean(0)
  w = np.asarray(weights, np.float64)
  return w @ preds / w.sum()


def _loss_and_grad(preds, y, w, kind):
  p = w @ preds
  if kind == 'binary':
    p = np.clip(p, EPS, 1 - EPS)
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    dp = (p - y) / (p * (1 - p)) / len(y)
  else:
    loss = np.mean((p - y) ** 2)
    dp = 2 * (p - y) / len(y)
  return loss, preds @ dp


def fit_weights(preds, y, *, kind: str, steps: int = 500, lr: float = 1.0):
  """Simplex weights [M] of the mean with the least validation loss.

  Exponentiated gradient from uniform weights, the step normalised by the
  gradient's largest entry; returns the best iterate seen.
  """
  preds = np.asarray(preds, np.float64)
  y = np.asarray(y, np.float64)
  m = len(preds)
  w = np.full(m, 1.0 / m)
  best_w, best = w, np.inf
  for t in range(steps):
    loss, g = _loss_and_grad(preds, y, w, kind)
    if loss < best:
      best_w, best = w, loss
    scale = max(np.abs(g).max(), 1e-12)
    w = w * np.exp(-lr / np.sqrt(t + 1) * g / scale)
    w = w / w.sum()
  return best_w


def rank_average(preds, weights=None) -> np.ndarray:
  """Mean [N] of each member's ranks / N (ties at their mean rank)."""
  preds = np.asarray(preds, np.float64)
  n = preds.shape[1]
  ranks = np.empty_like(preds)
  for i, p in enumerate(preds):
    order = np.argsort(p, kind='stable')
    sp = p[order]
    start = np.r_[True, sp[1:] != sp[:-1]]
    first = np.flatnonzero(start)
    last = np.r_[first[1:], n] - 1
    grp = np.cumsum(start) - 1
    ranks[i, order] = (first[grp] + last[grp]) / 2.0 + 1.0
  return average(ranks / n, weights)


def uniform_soup(params: Sequence):
  """The leaf-wise mean of M params trees of one structure."""
  return jax.tree.map(
    lambda *xs: np.mean(np.stack([np.asarray(x) for x in xs]), 0), *params
  )


def greedy_soup(
  params: Sequence, score: Callable[[object], float], scores=None
) -> tuple[object, list[int], list[float]]:
  """Wortsman et al.'s greedy soup (higher `score` is better).

  Args:
    params: M params trees of one architecture.
    score: params -> validation score.
    scores: the members' own scores (computed when None).

  Returns:
    (soup params, the members in it by index, the soup's score after each
    candidate in order).
  """
  if scores is None:
    scores = [score(p) for p in params]
  order = list(np.argsort(-np.asarray(scores, float), kind='stable'))
  chosen = [int(order[0])]
  best = float(scores[order[0]])
  trace = [best]
  for i in order[1:]:
    trial = uniform_soup([params[j] for j in chosen + [int(i)]])
    s = float(score(trial))
    if s >= best:
      chosen, best = chosen + [int(i)], s
    trace.append(best)
  return uniform_soup([params[j] for j in chosen]), chosen, trace
