"""Calibration of predicted probabilities (numpy, host side, pure).

`calibration(p, y)`: equal-width probability bins, each with its count,
mean prediction and observed rate (mtl-eval's 'calibration' tables).
`ece(y, p)`: the expected calibration error over those bins, the
count-weighted mean of |mean prediction - observed rate|.
"""

import numpy as np

CALIBRATION_BINS = 10


def calibration(p, y, bins: int = CALIBRATION_BINS) -> list[dict]:
  """Equal-width probability bins: count, mean prediction, observed rate."""
  idx = np.minimum((p * bins).astype(int), bins - 1)
  out = []
  for b in range(bins):
    sel = idx == b
    n = int(sel.sum())
    out.append(
      {
        'low': b / bins,
        'high': (b + 1) / bins,
        'count': n,
        'mean_prediction': float(p[sel].mean()) if n else None,
        'observed_rate': float(y[sel].mean()) if n else None,
      }
    )
  return out


def ece(y, p, bins: int = CALIBRATION_BINS) -> float:
  """Expected calibration error of probabilities `p` for labels `y`."""
  return float(
    sum(
      b['count'] * abs(b['mean_prediction'] - b['observed_rate'])
      for b in calibration(p, y, bins)
      if b['count']
    )
    / len(p)
  )
