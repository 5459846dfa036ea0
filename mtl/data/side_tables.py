"""Side tables joined to a table's rows by key (the `table` dataset's
`joins`): a user or item table, read whole, its columns added to each row
whose `on` column names one of its keys. A key the side table does not
list, a repeated key, or a column name both files have is a DataError
naming the file and row.
"""

from collections.abc import Iterator

import numpy as np
import pandas as pd

from mtl.data.table_files import Source
from mtl.errors import DataError


class Joined:
  """A table file whose rows get the columns of side tables (`joins`:
  [(side Source, the table's column `on`, the side table's key column)]),
  looked up by key; a side table is read whole (a user or item table)."""

  def __init__(self, source: Source, joins):
    self.source, self.joins, self.path = source, joins, source.path
    self._sides = None

  def sides(self) -> list[tuple[pd.DataFrame, str, str]]:
    """[(side table indexed by its key's text, on, its path)]."""
    if self._sides is None:
      self._sides = [
        (_side_table(side, key), on, side.path) for side, on, key in self.joins
      ]
    return self._sides

  def columns(self) -> list[str]:
    own = self.source.columns()
    out = list(own)
    for side, _, path in self.sides():
      for c in side.columns:
        if c in out:
          raise DataError(
            f'{path}: has column {c!r}, which {self.path} (or another side '
            'table) has too, expected distinct names (see its column_names)'
          )
        out.append(c)
    return out

  def chunks(
    self, chunksize: int, usecols, numeric=frozenset(), start=0, stop=None
  ) -> Iterator:
    own = self.source.columns()
    read = [c for c in usecols if c in own] + [on for _, on, _ in self.sides()]
    keys = {on for _, on, _ in self.sides()}
    for first, chunk in self.source.chunks(
      chunksize, dict.fromkeys(read), numeric - keys, start, stop
    ):
      for side, on, path in self.sides():
        wanted = [c for c in usecols if c in side.columns]
        if not wanted:
          continue
        keys = chunk[on].astype(str).to_numpy(object)
        at = side.index.get_indexer(keys)
        if (at < 0).any():
          i = int(np.argmax(at < 0))
          raise DataError(
            f'{self.path}: row {first + i + 1} column {on!r} is {keys[i]!r}, '
            f'which {path} does not list'
          )
        for c in wanted:
          chunk[c] = side[c].to_numpy(object)[at]
      yield first, chunk[list(usecols)]


def _side_table(source: Source, key: str) -> pd.DataFrame:
  """A side table's rows by its `key` column's text; a repeated key is a
  DataError."""
  columns = source.columns()
  if key not in columns:
    raise DataError(
      f'{source.path}: has no column {key!r}, expected it as the join key; '
      f'its columns are {", ".join(columns)}'
    )
  frames = [chunk for _, chunk in source.chunks(DEFAULT_SIDE_CHUNK, columns)]
  side = pd.concat(frames, ignore_index=True)
  keys = side[key].astype(str)
  repeated = keys.duplicated()
  if repeated.any():
    i = int(np.argmax(repeated.to_numpy()))
    raise DataError(
      f'{source.path}: row {i + 1} column {key!r} repeats {keys.iloc[i]!r}, '
      'expected one row per key'
    )
  return side.drop(columns=key).set_axis(pd.Index(keys, dtype=object))


DEFAULT_SIDE_CHUNK = 65_536
