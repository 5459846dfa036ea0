"""Pass 2 of the table builder (table_builder.py): the encoding, fitted.

On the training rows only: each vocabulary (value counts, then
`min_count`; encoding.fit_vocabulary), each dense feature's moments after
its transform and over its present values (cb.Moments), each regression
label's moments on its sample space, each count feature's moments (with
its log's priors and totals, table_plan.py). With the split sizes and
each user's history tails, the result is the builder's metadata (the
encoding pass 3, table_encode.py, reads).
"""

from collections import Counter

import numpy as np
import pandas as pd

from mtl.data import counts as cf
from mtl.data import csv_builder as cb
from mtl.data import delimiters
from mtl.data import schema as sc
from mtl.data.encoding import fit_vocabulary, last_values
from mtl.data.table_encode import dense_raw, task_label
from mtl.data.table_files import cell_values
from mtl.data.table_splits import SPLITS


def fit(schema: sc.Schema, plan, chunks) -> dict:
  """The encoding (module docstring) fitted on `chunks`: the training
  split's (source, first data row, chunk, global rows, kept) tuples."""
  s = schema
  counted = [
    f
    for f in s.of(sc.Categorical) + s.of(sc.Sequence)
    if s.table_of(f.name) == f.name and not f.hash_buckets
  ]
  counts = {f.name: Counter() for f in counted}
  dense = {f.name: cb.Moments((f.name,)) for f in s.of(sc.Dense)}
  labels = {t.name: cb.Moments((t.name,)) for t in s.tasks}
  fitted = {f.name: cb.Moments(tuple(cf.outputs(f))) for f in s.of(sc.Count)}
  split_by = delimiters.DelimiterCheck(s.of(sc.Sequence))
  for source, start, chunk, rows, keep in chunks:
    for name, log in plan.counts.items():
      fitted[name].update(log.values(rows[keep]))
    chunk = chunk[keep]
    offsets = start + np.flatnonzero(keep)
    for f in s.of(sc.Sequence):
      split_by.update(f, chunk[f.column], source.path)
    for f in counted:
      if isinstance(f, sc.Sequence):
        values = last_values(chunk[f.column], f.delimiter, f.max_len)[0]
      else:
        values = cell_values(f, chunk).dropna().astype(str)
      counts[f.name].update(pd.Series(values).value_counts().to_dict())
    for f in s.of(sc.Dense):
      x = dense_raw(f, chunk, offsets, source)
      present = x[np.isfinite(x)]
      dense[f.name].update(present[:, None])
    for t in s.tasks:
      y, m = task_label(t, chunk, offsets, source)
      labels[t.name].update(y[m > 0][:, None].astype(np.float64))
  split_by.finish()  # Before any vocabulary is fitted on whole strings.
  tables = {}
  for f in s.of(sc.Categorical) + s.of(sc.Sequence):
    if s.table_of(f.name) != f.name:
      continue
    if f.hash_buckets:
      tables[f.name] = {'hash_buckets': f.hash_buckets}
    else:
      tables[f.name] = {
        'vocabulary': fit_vocabulary(counts[f.name], f.min_count)
      }
  out = {
    'tables': tables,
    'dense': {n: m.finish()[n] for n, m in dense.items()},
    'labels': {n: m.finish()[n] for n, m in labels.items()},
    'rows': {
      name: int((plan.codes == code).sum()) for code, name in enumerate(SPLITS)
    },
  }
  if plan.history:  # Each user's latest items, for prediction.
    out['histories'] = {n: h['tails'] for n, h in plan.history.items()}
  if fitted:  # Only then: other tables' metadata keeps its keys.
    out['counts'] = {
      name: {
        'moments': fitted[name].finish(),
        'priors': log.priors,
        'totals': log.totals,
      }
      for name, log in plan.counts.items()
    }
  return out
