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
