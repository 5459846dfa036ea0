"""Feature kind 'count': a key's earlier rows and positive rates as dense
inputs (counts.py computes them; schema.py says its keys). Derived over
the whole log: table_plan.Plan when the data is prepared (its counts.Log),
derived.Derived for given rows; standardised with training moments."""

import numpy as np

from mtl.data import counts as cf
from mtl.data import csv_builder as cb
from mtl.data import schema as sc
from mtl.data.conditions import parse_condition
from mtl.data.kinds.base import Kind, Rows
from mtl.errors import ConfigError


class Fitted:
  """Each count feature's moments over the training rows, with its log's
  priors and totals (prediction continues from them)."""

  def __init__(self, features, plan):
    self.features, self.plan = features, plan
    self.moments = {f.name: cb.Moments(tuple(cf.outputs(f))) for f in features}

  def update(self, rows: Rows) -> None:
    for f in self.features:
      self.moments[f.name].update(rows.derived(f), rows.key)

  def merge(self, other: 'Fitted') -> None:
    for name, m in other.moments.items():
      self.moments[name].merge(m)

  def __getstate__(self):  # Sent between processes without the plan.
    return {**self.__dict__, 'plan': None}

  def finish(self) -> dict:
    return {
      'counts': {
        name: {
          'moments': self.moments[name].finish(),
          'priors': log.priors,
          'totals': log.totals,
        }
        for name, log in self.plan.counts.items()
      }
    }


class CountKind(Kind):
  spec = sc.Count
  derived = True

  def check(self, where: str, fields: dict) -> dict:
    """Its labels (a tuple of columns or conditions, each parsed) and
    prior_strength (a number > 0)."""
    labels = fields.get('labels', ())
    if isinstance(labels, str):
      labels = (labels,)
    if not isinstance(labels, list | tuple):
      raise ConfigError(
        f'{where}.labels is {labels!r}, expected a tuple of 0/1 columns or '
        "conditions like 'rating >= 4'"
      )
    labels = tuple(labels)
    for text in labels:
      parse_condition(text, f'{where}.labels')
    texts = [t.strip() for t in labels]
    if len(set(texts)) != len(texts) or 'count' in texts:
      raise ConfigError(
        f'{where}.labels is {labels!r}, expected distinct labels, none named '
        "'count' (the dense inputs are '<name>.count' and '<name>.<label>')"
      )
    a = fields.get('prior_strength', 10.0)
    if isinstance(a, bool) or not isinstance(a, int | float) or not a > 0:
      raise ConfigError(
        f'{where}.prior_strength is {a!r}, expected a number > 0 (rows of '
        'the prior)'
      )
    if not np.isfinite(a):
      raise ConfigError(
        f'{where}.prior_strength is {a!r}, expected a finite number > 0'
      )
    return {**fields, 'labels': tuple(texts), 'prior_strength': float(a)}

  def fitter(self, features, schema, plan):
    return Fitted(features, plan)

  def inputs(self, f, schema):
    return cf.outputs(f), []

  def encode(self, f, rows: Rows):
    fitted = rows.encoding['counts'][f.name]
    return cf.standardise(f, rows.derived(f), fitted), []

  def given(self, f) -> list[str]:
    return [f.key, f.time]

  def check_file(self, f, found, path) -> None:
    cf.check_columns(f, found, path)
