"""The host-side evaluation metrics by name: METRICS (pure).

mtl-eval computes, for each member and task, every metric named in
`config.eval_metrics` (in that order; default: DEFAULT, the built-ins) that
applies to the task, on the task's labelled rows in float64, and writes it
as `<prefix>/<name>/<task>` (prefix 'val', 'test' or 'eval'). The binned
AUC, logloss and MSE/RMSE are not here: the compiled eval step computes
them (mtl/core/metrics.py), so they equal results.json's bit for bit.

A metric is a `Metric`: its function of one task's rows, the task kinds it
applies to (mtl.core.tasks.KINDS), whether it needs the users column (it is
then computed only where the data has one) and whether it reads the
probability or the raw output. A new one is a function (pure, numpy) plus
one line in METRICS, here, or in the user's own module named in
`config.plugins` (mtl/shell/plugins.py). `check_names` is the config's rule.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from mtl.core import calibration, ranking_metrics
from mtl.core.tasks import KINDS
from mtl.errors import ConfigError, did_you_mean

SCORES = ('probability', 'output')
CLASSIFIERS = ('binary', 'weighted_logistic')


@dataclasses.dataclass(frozen=True)
class Metric:
  """A scalar of one task's rows.

  fn: `fn(y, s)`, or `fn(y, s, users)` when `needs_users`, returning a
    float, or None where the metric is undefined on these rows. y: the
    labels [n] (float64); s: the scores [n] (float64), the probability
    sigmoid(output) when `score` is 'probability', else the model's output
    (a logit; a regression's value in its trained label space); users: one
    integer key per row [n].
  kinds: the task kinds it is computed for.
  needs_users: computed only where the data has a user column.
  score: 'probability' or 'output' (what `s` is).
  """

  fn: Callable[..., float | None]
  kinds: tuple[str, ...] = KINDS
  needs_users: bool = False
  score: str = 'probability'

  def __post_init__(self):
    if self.score not in SCORES or not set(self.kinds) <= set(KINDS):
      raise ValueError(
        f'Metric score {self.score!r} kinds {self.kinds}, expected one of '
        f'{SCORES} and kinds among {KINDS}'
      )


def _defined(value: float) -> float | None:
  return None if np.isnan(value) else value


METRICS = {
  # A regression's or weighted_logistic task's same-user pairs ordered
  # like their labels (ranking_metrics.xauc).
  'xauc': Metric(
    lambda y, z, users: _defined(ranking_metrics.xauc(y, z, users)),
    kinds=('regression', 'weighted_logistic'),
    needs_users=True,
    score='output',
  ),
  'mae': Metric(ranking_metrics.mae, kinds=('regression',), score='output'),
  # Over calibration.CALIBRATION_BINS equal-width probability bins.
  'ece': Metric(calibration.ece, kinds=CLASSIFIERS),
  'predicted_mean': Metric(lambda y, p: float(p.mean()), kinds=CLASSIFIERS),
  'observed_rate': Metric(lambda y, p: float(y.mean()), kinds=CLASSIFIERS),
  # Impression-weighted per-user AUC (ranking_metrics.gauc).
  'gauc': Metric(
    lambda y, p, users: _defined(ranking_metrics.gauc(y, p, users)),
    kinds=CLASSIFIERS,
    needs_users=True,
  ),
}
# config.eval_metrics' default. The order is the order of a task's metrics
# in mtl-eval's output.
DEFAULT = ('xauc', 'mae', 'ece', 'predicted_mean', 'observed_rate', 'gauc')


def check_names(names, key: str = 'eval_metrics') -> None:
  """Raises a one-line ConfigError on the first name not in METRICS."""
  for i, name in enumerate(names):
    if name not in METRICS:
      raise ConfigError(
        f'{key}[{i}] {name!r} is not one of {", ".join(METRICS)}'
        f'{did_you_mean(name, METRICS)}'
      )


def sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def task_metrics(names, kind: str, y, z, users=None) -> dict:
  """{name: value} of the metrics `names` that apply to a task of `kind`,
  on its rows: labels y [n], outputs z [n] (float64), users [n] or None."""
  out, p = {}, None
  for name in names:
    metric = METRICS[name]
    if kind not in metric.kinds or (metric.needs_users and users is None):
      continue
    if metric.score == 'probability' and p is None:
      p = sigmoid(z)
    s = p if metric.score == 'probability' else z
    out[name] = (
      metric.fn(y, s, users) if metric.needs_users else metric.fn(y, s)
    )
  return out
