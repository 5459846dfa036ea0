"""Bagging inside one population: each member's own bootstrap of the rows.

Breiman, "Bagging Predictors", Machine Learning 24, 1996: models trained on
bootstrap resamples of the training set, then averaged. A bootstrap of N
rows draws each row Binomial(N, 1/N) times, which tends to Poisson(1) (Oza
& Russell, "Online Bagging and Boosting", AISTATS 2001): so member k
weights row i's loss by an independent Poisson(1) count, and trains on its
own resample without any copy of the data (a weight of 0, about 37 % of the
rows, leaves the row out; `mtl.core.losses.masked_loss_sums(weights=)`).

The counts are a pure function of (member seed, member index, row): fixed
for the whole run (every epoch sees the same resample), the same on resume,
and different between members even when they share a seed.
"""

import numpy as np

_TAG = 0xBA661  # Keeps these draws apart from any other use of the seed.


def poisson_weights(seed: int, member: int, num_rows: int) -> np.ndarray:
  """Member `member`'s bootstrap counts of `num_rows` rows: float32 [N]."""
  rng = np.random.default_rng([_TAG, int(seed) & 0xFFFFFFFF, int(member)])
  return rng.poisson(1.0, num_rows).astype(np.float32)
