"""A guard against input features that are copies of a label.

`check_no_label_leakage` raises when a feature column is a deterministic
function of a task's label on that task's sample space (the rows where its
mask is 1): the label itself, 1 - label, label * 7, a category id that is the
label's class, a 'like' flag derived from a rating, and so on.

The criterion, and why:

1. Functional dependence, x = f(y). A feature computed from the label takes
   ONE value within each label class, whatever f is (linear or not, on floats
   or category ids, after any re-encoding or standardisation), so the test
   is exact equality within each class: for every class c of the label, the
   feature's minimum over the class's rows equals its maximum. The feature
   must also take at least two values over the rows: a constant column is a
   function of anything, and carries no label. The direction matters: the
   converse, y = g(x), holds for every high-cardinality feature (a user id,
   a row id) whenever most values occur once, so it cannot be the test.
2. Evidence, not coincidence. In a small sample an ordinary feature can be
   constant within a class by chance: the only purchase of 100 rows has
   SOME value of every feature. So the dependence is reported only when it
   would be very unlikely if the feature were independent of the label. If
   the rows' feature values were assigned by a uniformly random permutation
   (independence, keeping the value counts m_v), the probability that every
   class is constant is (number of class -> value maps with those counts) *
   prod_v m_v! / N!, and the number of maps is at most V^K (V values,
   K classes). The feature is reported when this bound is below `alpha`
   (default 1e-9, so that even a few hundred feature-task tests raise a
   false alarm with probability below 1e-6). For a binary label with n1
   positives among N rows the bound is 4 / C(N, n1): one positive is never
   evidence (4 / N), 7 clicks among 100 rows are (2.5e-10).

Features weakly or strongly correlated with the label, ids of any
cardinality and noisy copies (label + noise) are not constant within a class
and never trigger it.

Limits, each a consequence of the same reasoning:
- When (nearly) every label value is distinct, as for a continuous
  regression target, every injective feature is a function of it, so there
  the check has no power (the bound stays near 1) rather than raise false
  alarms.
- The converse, a label that is a function of a finer feature (census's
  marital status -> 'never married'), is not tested: with the same bound it
  would flag real features. On the AliExpress sample, numerical_9..18 take
  35 values over 89 training rows and determine click exactly, because the
  rows of one search share them and the sample's clicks cluster by search:
  rows are not exchangeable there, and those are ordinary query features.
  Dropping a label's source columns stays the loader's job.
- The null assumes exchangeable rows: many exact duplicates of a few rows
  (a tiny sample copied over and over) can make a real feature look like a
  function of a rare label.
"""

import math
from collections.abc import Sequence

import numpy as np

from mtl.errors import DataError


def _chance_bound(class_sizes: np.ndarray, value_of_class: np.ndarray) -> float:
  """log of the bound V^K * prod_v m_v! / N! (see the module docstring)."""
  k, v = len(class_sizes), int(value_of_class.max()) + 1
  rows_per_value = np.bincount(value_of_class, weights=class_sizes)
  log_p = (
    k * math.log(v)
    + sum(math.lgamma(m + 1) for m in rows_per_value)
    - math.lgamma(class_sizes.sum() + 1)
  )
  return min(0.0, log_p)


def _scientific(log_p: float) -> str:
  """exp(log_p) as '2.5e-10', also far below the float range."""
  exponent = math.floor(log_p / math.log(10))
  mantissa = math.exp(log_p - exponent * math.log(10))
  return f'{mantissa:.1f}e{exponent:+03d}'


def _describe(classes: np.ndarray, values: np.ndarray) -> str:
  pairs = [f'{c:g} -> {v:g}' for c, v in zip(classes, values, strict=True)]
  if len(pairs) > 5:
    pairs = pairs[:5] + [f'... ({len(pairs)} classes)']
  return ', '.join(pairs)


def check_no_label_leakage(
  dense: np.ndarray,
  sparse: np.ndarray,
  labels: np.ndarray,
  mask: np.ndarray,
  feature_names: Sequence[str],
  task_names: Sequence[str],
  *,
  alpha: float = 1e-9,
  where: str = 'dataset',
) -> None:
  """Raises if a feature column is a deterministic function of a label.

  Args:
    dense: [N, F] numeric features.
    sparse: [N, S] categorical ids.
    labels: [T, N] labels.
    mask: [T, N]; only rows with mask > 0 count for task t.
    feature_names: the F dense then the S sparse feature names.
    task_names: the T task names.
    alpha: report a dependence only if its chance probability under
      independence is below this (see the module docstring).
    where: what is checked, for the message (e.g. 'ali_ccp train').

  Raises:
    DataError: one line naming the feature, the task, the value each label
      class maps to and the chance bound.
  """
  columns = [dense[:, j] for j in range(dense.shape[1])]
  columns += [sparse[:, j] for j in range(sparse.shape[1])]
  if len(feature_names) != len(columns) or len(task_names) != len(labels):
    raise ValueError(
      f'{where}: {len(feature_names)} feature names for {len(columns)} '
      f'feature columns, {len(task_names)} task names for {len(labels)} tasks'
    )
  for t, task in enumerate(task_names):
    rows = np.flatnonzero(mask[t] > 0)
    classes, inverse, sizes = np.unique(
      labels[t, rows], return_inverse=True, return_counts=True
    )
    if len(classes) < 2:
      continue
    order = rows[np.argsort(inverse, kind='stable')]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for name, x in zip(feature_names, columns, strict=True):
      by_class = x[order]
      low = np.minimum.reduceat(by_class, starts)
      if not np.array_equal(low, np.maximum.reduceat(by_class, starts)):
        continue  # some class holds two values: not a function of the label
      values, value_of_class = np.unique(low, return_inverse=True)
      if len(values) < 2:
        continue  # constant on this sample space
      log_p = _chance_bound(sizes, value_of_class)
      if log_p < math.log(alpha):
        raise DataError(
          f'{where}: feature {name!r} is a deterministic function of the '
          f'label of task {task!r} on its {len(rows)} rows (label -> '
          f'feature: {_describe(classes, low)}; chance probability under '
          f'independence <= {_scientific(log_p)}), so it leaks the label; '
          'remove it from the inputs'
        )
