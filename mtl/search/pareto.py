"""Pareto fronts of multi-task results (pure numpy).

Points are rows of scores to MAXIMISE (e.g. the validation AUC of each task).
A point is dominated when another is >= on every score and > on one; the
Pareto set is the non-dominated points. The hypervolume of a 2-task set is
the area dominated by it and bounded below by a reference point (Zitzler &
Thiele, "Multiobjective optimization using evolutionary algorithms: a
comparative case study", PPSN 1998), the usual single number for a front.
"""

import numpy as np


def non_dominated(points) -> np.ndarray:
  """Boolean mask [N]: True for points no other point dominates."""
  p = np.asarray(points, dtype=np.float64)
  if p.ndim != 2:
    raise ValueError(f'points have shape {p.shape}, expected [N, tasks]')
  ge = (p[:, None, :] >= p[None, :, :]).all(-1)  # ge[j, i]: j >= i
  gt = (p[:, None, :] > p[None, :, :]).any(-1)
  dominated = (ge & gt).any(0)
  return ~dominated


def hypervolume_2d(points, reference) -> float:
  """Area dominated by 2-D `points` (maximised) above `reference`."""
  p = np.asarray(points, dtype=np.float64)
  ref = np.asarray(reference, dtype=np.float64)
  if p.ndim != 2 or p.shape[1] != 2 or ref.shape != (2,):
    raise ValueError(
      f'points {p.shape} and reference {ref.shape}: expected [N, 2] and [2]'
    )
  p = p[(p > ref).all(1)]
  if not len(p):
    return 0.0
  p = p[non_dominated(p)]
  p = p[np.argsort(-p[:, 0])]  # x descending, so y ascends on the front
  area, y_prev = 0.0, ref[1]
  for x, y in p:
    area += (x - ref[0]) * (y - y_prev)
    y_prev = y
  return float(area)
