"""Feature kind 'dense': one float column, normalised (schema.py says its
keys): `dense_raw` reads and transforms a chunk's values, the fitter takes
the training moments of the present ones, `dense_columns` normalises and
fills them (and adds the missing indicator)."""

import numpy as np

from mtl.data import csv_builder as cb
from mtl.data import schema as sc
from mtl.data.kinds.base import Kind, Rows
from mtl.data.table_files import cell_values, numbers
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


class Moments:
  """Each dense feature's moments over its present training values."""

  def __init__(self, features):
    self.features = features
    self.moments = {f.name: cb.Moments((f.name,)) for f in features}

  def update(self, rows: Rows) -> None:
    for f in self.features:
      x = dense_raw(f, rows.chunk, rows.offsets, rows.source)
      present = x[np.isfinite(x)]
      self.moments[f.name].update(present[:, None], rows.key)

  def merge(self, other: 'Moments') -> None:
    for name, m in other.moments.items():
      self.moments[name].merge(m)

  def finish(self) -> dict:
    return {'dense': {n: m.finish()[n] for n, m in self.moments.items()}}


class DenseKind(Kind):
  spec = sc.Dense

  def fitter(self, features, schema, plan):
    return Moments(features)

  def inputs(self, f, schema):
    return [f.name] + [f'{f.name}_missing'] * f.missing_indicator, []

  def encode(self, f, rows: Rows):
    columns = dense_columns(
      f, rows.chunk, rows.offsets, rows.source, rows.encoding
    )
    return columns, []
