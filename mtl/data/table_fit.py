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


def fit(schema: sc.Schema, plan, chunks) -> dict:
  """The encoding (module docstring) fitted on `chunks`: the training
  split's (source, first data row, chunk, global rows, kept) tuples."""
  fitters = feature_kinds.fitters(schema, plan)
  labels = {t.name: cb.Moments((t.name,)) for t in schema.tasks}
  for source, start, chunk, rows, keep in chunks:
    chunk, rows = chunk[keep], rows[keep]
    offsets = start + np.flatnonzero(keep)
    at = Rows(schema, chunk, offsets, source, None, None, plan.values, rows)
    for fitter in fitters:
      fitter.update(at)
    for t in schema.tasks:
      y, m = task_label(t, chunk, offsets, source)
      labels[t.name].update(y[m > 0][:, None].astype(np.float64))
  out = {
    'tables': {},
    'dense': {},
    'labels': {n: m.finish()[n] for n, m in labels.items()},
    'rows': {
      name: int((plan.codes == code).sum()) for code, name in enumerate(SPLITS)
    },
  }
  for fitter in fitters:  # Sections other tables lack stay out.
    for section, fitted in fitter.finish().items():
      out.setdefault(section, {}).update(fitted)
  return out
