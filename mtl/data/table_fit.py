"""Pass 2 of the table builder (table_builder.py): the encoding, fitted.

On the training rows only: what each feature kind fits (its fitter,
feature_kinds.py: vocabularies or hash settings per table, dense moments
after the transform over the present values, count features' moments with
their log's priors and totals, each user's history tails) and each
regression label's moments on its sample space. With the split sizes, the
result is the builder's metadata (the encoding pass 3, table_encode.py,
reads).
"""

import numpy as np

from mtl.data import csv_builder as cb
from mtl.data import feature_kinds
from mtl.data import schema as sc
from mtl.data.kinds.base import Rows
from mtl.data.table_encode import task_label
from mtl.data.table_splits import SPLITS


class Fit:
  """What pass 2 holds: each kind's fitter and each task's label moments;
  `merge` takes in a Fit of other chunks (beam_prepare.py: chunks fitted
  in several processes finish to the same bits)."""

  def __init__(self, schema: sc.Schema, plan):
    self.schema = schema
    self.fitters = feature_kinds.fitters(schema, plan)
    self.labels = {t.name: cb.Moments((t.name,)) for t in schema.tasks}

  def update(self, plan, chunks) -> 'Fit':
    """Takes in `chunks`: (source, first data row, chunk, global rows,
    kept) tuples of training rows."""
    for source, start, chunk, rows, keep in chunks:
      chunk, rows = chunk[keep], rows[keep]
      offsets = start + np.flatnonzero(keep)
      at = Rows(
        self.schema, chunk, offsets, source, None, None, plan.values, rows
      )
      for fitter in self.fitters:
        fitter.update(at)
      for t in self.schema.tasks:
        y, m = task_label(t, chunk, offsets, source)
        self.labels[t.name].update(y[m > 0][:, None].astype(np.float64), at.key)
    return self

  def merge(self, other: 'Fit') -> 'Fit':
    for mine, theirs in zip(self.fitters, other.fitters, strict=True):
      mine.merge(theirs)
    for name, m in other.labels.items():
      self.labels[name].merge(m)
    return self

  def finish(self, plan) -> dict:
    """The encoding (module docstring); `plan` is given back to fitters
    that were sent between processes without it."""
    out = {
      'tables': {},
      'dense': {},
      'labels': {n: m.finish()[n] for n, m in self.labels.items()},
      'rows': {
        name: int((plan.codes == code).sum())
        for code, name in enumerate(SPLITS)
      },
    }
    for fitter in self.fitters:  # Sections other tables lack stay out.
      if getattr(fitter, 'plan', False) is None:
        fitter.plan = plan
      for section, fitted in fitter.finish().items():
        out.setdefault(section, {}).update(fitted)
    return out


def fit(schema: sc.Schema, plan, chunks) -> dict:
  """The encoding (module docstring) fitted on `chunks`: the training
  split's (source, first data row, chunk, global rows, kept) tuples."""
  return Fit(schema, plan).update(plan, chunks).finish(plan)
