"""Pass 3 of the table builder (table_builder.py): rows encoded as records.

`encoded_chunks` turns each chunk of a split's rows (table_builder's
(source, first data row, chunk, global rows, kept) tuples) into 'dense'
[n, F] f32, 'sparse' [n, S] i32 (a categorical feature one column, a
sequence or history `max_len`), 'labels' and 'mask' [n, T] f32 and 'row'
[n] i64 (the row's position in the concatenated files), with the fitted
`encoding` (table_fit.py). `dense_raw`, `dense_columns` and `task_label`
read and check a chunk's dense values and labels; table_fit.py fits on
them and preprocessing.py encodes raw rows by them.

A bad value is one DataError line naming the file, its 1-based data row
(the header not counted), the column, what was found and what was expected.
"""

from collections.abc import Iterator

import numpy as np
import pandas as pd

from mtl.data import counts as cf
from mtl.data import schema as sc
from mtl.data.encoding import Lookup, encode_sequences
from mtl.data.table_files import cell_values, numbers, to_float
from mtl.data.table_plan import history_ids
from mtl.errors import DataError


def dense_raw(f: sc.Dense, chunk, offsets, source) -> np.ndarray:
  """float64 [n] after the transform; NaN where missing."""
  x = numbers(
    {f.column: cell_values(f, chunk)}, f.column, offsets, source.path,
    f.missing,
  )  # fmt: skip
  if f.normalize in ('log1p', 'log1p_standard'):
    bad = x <= -1
    if bad.any():
      i = int(np.argmax(bad))
      raise DataError(
        f'{source.path}: row {offsets[i] + 1} column {f.column!r} is '
        f'{x[i]:g}, expected a number > -1 (normalize log1p)'
      )
    x = np.log1p(x)
  return x


def dense_columns(f: sc.Dense, chunk, offsets, source, encoding) -> list:
  """[float64 [n]]: the normalised values, missing ones filled, then the
  missing indicator if the feature has one."""
  x = dense_raw(f, chunk, offsets, source)
  missing = ~np.isfinite(x)
  stats = encoding['dense'][f.name]
  if f.normalize in ('standard', 'log1p_standard'):
    x = (x - stats['mean']) / stats['std']
    fill = 0.0 if f.missing in ('mean', 'zero') else np.nan
  else:
    fill = stats['mean'] if f.missing == 'mean' else 0.0
  out = [np.where(missing, fill, x)]
  if f.missing_indicator:
    out.append(missing.astype(np.float64))
  return out


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
    lambda i: 'empty' if pd.isna(raw.iloc[i]) else repr(raw.iloc[i]),
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
      lambda i: repr(raw.iloc[i]),
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


def encoded_chunks(schema: sc.Schema, plan, encoding: dict, chunks) -> Iterator:
  """One record's arrays (module docstring) per chunk of `chunks`, the
  split's kept rows of each, encoded by the fitted `encoding`."""
  s = schema
  lookups = {name: Lookup(table) for name, table in encoding['tables'].items()}
  item_ids = {
    h.name: lookups[s.table_of(h.name)](plan.history[h.name]['items'])
    for h in s.of(sc.History)
  }
  for source, start, chunk, rows, keep in chunks:
    chunk, rows = chunk[keep], rows[keep]
    offsets = start + np.flatnonzero(keep)
    dense, sparse = [], []
    for f in s.features:
      if isinstance(f, sc.Dense):
        dense += dense_columns(f, chunk, offsets, source, encoding)
      elif isinstance(f, sc.Count):
        x = plan.counts[f.name].values(rows)
        dense += cf.standardise(f, x, encoding['counts'][f.name])
      elif isinstance(f, sc.Categorical):
        ids = lookups[f.name](cell_values(f, chunk).to_numpy(object))
        sparse.append(ids[:, None])
      elif isinstance(f, sc.Sequence):
        sparse.append(
          encode_sequences(
            chunk[f.column], f.delimiter, f.max_len,
            lookups[s.table_of(f.name)],
          )
        )  # fmt: skip
      elif isinstance(f, sc.History):
        sparse.append(
          history_ids(plan.history[f.name], item_ids[f.name], rows, f.max_len)
        )
    labels, masks = [], []
    for t in s.tasks:
      y, m = task_label(t, chunk, offsets, source)
      if t.scale != 'none':
        stats = encoding['labels'][t.name]
        y = y - stats['mean']
        if t.scale == 'standard':
          y = y / stats['std']
        y = np.where(m > 0, y, 0.0)
      labels.append(y)
      masks.append(m)
    n = len(rows)
    yield {
      'dense': np.stack(dense, 1).astype(np.float32)
      if dense
      else np.zeros((n, 1), np.float32),
      'sparse': np.concatenate(sparse, 1).astype(np.int32)
      if sparse
      else np.zeros((n, 1), np.int32),
      'labels': np.stack(labels, 1).astype(np.float32),
      'mask': np.stack(masks, 1).astype(np.float32),
      'row': rows.astype(np.int64),
    }
