"""Pass 3 of the table builder (table_builder.py): rows encoded as records.

`encoded_chunks` turns each chunk of a split's rows (table_builder's
(source, first data row, chunk, global rows, kept) tuples) into 'dense'
[n, F] f32, 'sparse' [n, S] i32 (a categorical feature one column, a
sequence or history `max_len`), 'labels' and 'mask' [n, T] f32 and 'row'
[n] i64 (the row's position in the concatenated files), with the fitted
`encoding` (table_fit.py): the features by their kinds (feature_kinds.py),
the labels by `encoded_label`. `task_label` reads and checks a chunk's
labels (table_fit.py fits on them); `encoded_label` scales them, for
preprocessing.py's raw rows too.

A bad value is one DataError line naming the file, its 1-based data row
(the header not counted), the column, what was found and what was expected.
"""

from collections.abc import Iterator

import numpy as np
import pandas as pd

from mtl.data import feature_kinds
from mtl.data import schema as sc
from mtl.data.encoding import Lookups
from mtl.data.kinds.base import Rows
from mtl.data.prefetch import ordered_map
from mtl.data.table_files import found, numbers, to_float
from mtl.errors import DataError


def task_label(t: sc.TaskSpec, chunk, offsets, source):
  """(label float32 [n] after transform, mask float32 [n])."""
  n = len(chunk)
  mask = np.ones(n, np.float32)
  if t.where is not None:
    w = numbers(chunk, t.where.column, offsets, source.path)
    mask = t.where(w).astype(np.float32)
  on = mask > 0

  def check(bad, column, found, expected):
    """One DataError at the first sample-space row where `bad` holds."""
    bad = bad & on
    if bad.any():
      i = int(np.argmax(bad))
      raise DataError(
        f'{source.path}: row {offsets[i] + 1} column {column!r} is '
        f'{found(i)}, expected {expected}'
      )

  raw = chunk[t.label]
  values = to_float(raw)
  check(
    ~np.isfinite(values),
    t.label,
    lambda i: 'empty' if pd.isna(raw.iloc[i]) else found(raw, i),
    f'a finite number (the label of task {t.name!r})',
  )
  values = np.where(on, values, 0.0)
  if t.divide_by is not None:
    d = numbers(chunk, t.divide_by, offsets, source.path)
    check(
      ~(d > 0),
      t.divide_by,
      lambda i: f'{d[i]:g}',
      f"a number > 0 (the divisor of task {t.name!r}; a 'where' such as "
      f"'{t.divide_by} > 0' leaves such rows out)",
    )
    values = np.where(on, values / np.where(on, d, 1.0), 0.0)
  if t.condition is not None:
    values = t.condition(values).astype(np.float64)
  elif t.kind == 'binary':
    check(
      ~np.isin(values, (0.0, 1.0)),
      t.label,
      lambda i: found(raw, i),
      f'0 or 1 (binary task {t.name!r}; a condition label such as '
      "'rating >= 4' makes one)",
    )
  if t.kind == 'weighted_logistic':
    check(
      values < 0,
      t.label,
      lambda i: f'{values[i]:g}',
      f'a watch time >= 0 (weighted_logistic task {t.name!r})',
    )
  if t.transform == 'log1p':
    check(
      values <= -1,
      t.label,
      lambda i: f'{values[i]:g}',
      'a number > -1 (transform log1p)',
    )
    values = np.where(on, np.log1p(np.maximum(values, -0.5)), 0.0)
  return values.astype(np.float64), mask


def encoded_label(t: sc.TaskSpec, chunk, offsets, source, encoding: dict):
  """(label float64 [n], mask float32 [n]) of task_label, scaled by the
  training moments of the task's `scale` (0 off its sample space)."""
  y, m = task_label(t, chunk, offsets, source)
  if t.scale != 'none':
    stats = encoding['labels'][t.name]
    y = y - stats['mean']
    if t.scale == 'standard':
      y = y / stats['std']
    y = np.where(m > 0, y, 0.0)
  return y, m


def encoded_chunks(
  schema: sc.Schema, plan, encoding: dict, chunks, workers: int = 1
) -> Iterator:
  """One record's arrays (module docstring) per chunk of `chunks`, the
  split's kept rows of each, encoded by the fitted `encoding`: each
  feature by its kind (feature_kinds.encode), derived ones from `plan`.
  `workers` threads encode chunks at once (prefetch.ordered_map): a
  chunk's record depends on that chunk alone, so the records are the same
  whatever the number."""
  lookups = Lookups(encoding['tables'])

  def encode(item) -> dict:
    source, start, chunk, rows, keep = item
    chunk, rows = chunk[keep], rows[keep]
    offsets = start + np.flatnonzero(keep)
    at = Rows(
      schema, chunk, offsets, source, encoding, lookups, plan.values, rows
    )
    features = feature_kinds.encode(at, 1)
    labels, masks = [], []
    for t in schema.tasks:
      y, m = encoded_label(t, chunk, offsets, source, encoding)
      labels.append(y)
      masks.append(m)
    return {
      **features,
      'labels': np.stack(labels, 1).astype(np.float32),
      'mask': np.stack(masks, 1).astype(np.float32),
      'row': rows.astype(np.int64),
    }

  return ordered_map(encode, chunks, workers)
