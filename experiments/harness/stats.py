"""Mean, standard deviation, standard error, differences in standard errors.

Every experiment's summary statistics come from here. `ddof=1` (the sample
standard deviation) unless a script keeps its historical `ddof=0`.
"""

import dataclasses
import math
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Summary:
  """mean, std (with the given ddof) and n of a sample; se = std / sqrt(n)."""

  mean: float
  std: float
  n: int

  @property
  def se(self) -> float:
    return self.std / math.sqrt(self.n)


def _floats(values) -> list[float]:
  xs = [float(x) for x in values]
  if not xs:
    raise ValueError('statistics of an empty sample')
  return xs


def mean(values) -> float:
  xs = _floats(values)
  return math.fsum(xs) / len(xs)


def std(values, ddof: int = 1) -> float:
  """Standard deviation; 0.0 for a sample too small for `ddof`."""
  xs = _floats(values)
  if len(xs) <= ddof:
    return 0.0
  m = math.fsum(xs) / len(xs)
  return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - ddof))


def mean_std(values, ddof: int = 1) -> tuple[float, float]:
  """(mean, std); std 0.0 for a single value."""
  return mean(values), std(values, ddof)


def standard_error(values) -> float:
  """The standard error of the mean: std (ddof=1) / sqrt(n)."""
  xs = _floats(values)
  return std(xs) / math.sqrt(len(xs))


def summarize(values, ddof: int = 1) -> Summary:
  xs = _floats(values)
  return Summary(mean(xs), std(xs, ddof), len(xs))


def _summary(x) -> Summary:
  return x if isinstance(x, Summary) else summarize(x)


def _ratio(diff: float, se: float) -> float:
  if se:
    return diff / se
  return math.copysign(math.inf, diff) if diff else math.nan


def diff_in_se(a: Summary | Sequence, b: Summary | Sequence):
  """mean(a) - mean(b), and that difference in standard errors.

  Independent samples (e.g. different models' seeds): the standard error of
  the difference is sqrt(se_a^2 + se_b^2) (Welch). `a` and `b` are samples
  or Summary's. Returns (difference, difference / its standard error).
  """
  a, b = _summary(a), _summary(b)
  diff = a.mean - b.mean
  return diff, _ratio(diff, math.hypot(a.se, b.se))


def paired_diff_in_se(a: Sequence, b: Sequence):
  """Mean of a_i - b_i over matched pairs (e.g. the same seed), in SEs.

  Returns (mean difference, mean difference / standard error of the
  differences).
  """
  a, b = _floats(a), _floats(b)
  if len(a) != len(b):
    raise ValueError(f'paired samples of {len(a)} and {len(b)} values')
  d = [x - y for x, y in zip(a, b, strict=True)]
  m = mean(d)
  return m, _ratio(m, standard_error(d))


def task_metric(test: dict, task: str) -> tuple[str, float, bool]:
  """(name, value, higher_is_better) of a task's headline test metric in a
  run's `test` metrics: its AUC, else (a regression) its MSE."""
  for name, higher in (('auc', True), ('mse', False)):
    if f'test/{name}/{task}' in test:
      return name, test[f'test/{name}/{task}'], higher
  raise SystemExit(
    f'test metrics {sorted(test)}: no test/auc/{task} or test/mse/{task}'
  )


def metric_cell(tests: Sequence[dict], task: str, base=None, tie_se=2.0):
  """One task's test metric over seeds, as the experiments' tables hold it.

  `tests`: each seed's test metrics; `base`: the baseline's, on the same
  seeds in the same order, or None. Returns {'metric', 'higher_is_better',
  'values', 'mean', 'se'} and, with a baseline, the paired 'diff' and
  'diff_in_se' and a 'verdict': 'tie' within `tie_se` SE (or when the
  differences have no spread), else 'better' or 'worse' for this metric's
  direction.
  """
  name, _, higher = task_metric(tests[0], task)
  values = [task_metric(t, task)[1] for t in tests]
  s = summarize(values)
  cell = {'metric': name, 'higher_is_better': higher, 'values': values}
  cell.update(mean=s.mean, se=s.se)
  if base is not None:
    ref = [task_metric(t, task)[1] for t in base]
    d, in_se = paired_diff_in_se(values, ref)
    cell.update(diff=d, diff_in_se=in_se)
    if math.isnan(in_se) or abs(in_se) < tie_se:
      cell['verdict'] = 'tie'
    else:
      cell['verdict'] = 'better' if (d > 0) == higher else 'worse'
  return cell


def cell_text(cell: dict) -> str:
  """'mean +- se', and '(+diff, +x.x SE)' with a baseline: 4 digits for an
  AUC, 3 for an MSE."""
  digits = 4 if cell['metric'] == 'auc' else 3
  text = f'{cell["mean"]:.{digits}f} +- {cell["se"]:.{digits}f}'
  if 'diff_in_se' in cell:
    text += f' ({cell["diff"]:+.{digits}f}, {cell["diff_in_se"]:+.1f} SE)'
  return text
