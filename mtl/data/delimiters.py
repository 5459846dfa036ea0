"""A sequence feature's delimiter checked against its column's text.

A `sequence` feature's text cells are split by its `delimiter` (mtl.data
.sequences.split_values). A delimiter that occurs in none of them makes each
whole string one id: a column of 'a;b;c' read with the default '|' gives
as many "tags" as distinct strings. So when the training split is fitted
(the table's preparation, once), a sequence feature whose delimiter occurs
in no non-empty text value of its column, while some value holds another
separator-like character (SEPARATORS), is a DataError naming the feature,
its column, the delimiter and an example value. A column of one value per
row without separators (every row one tag) passes; list cells (a Parquet
list column) are never split and are not checked.
"""

import numpy as np
import pandas as pd

from mtl.errors import DataError

# Characters that separate values in the multi-valued text columns seen in
# logs: ',', ';', '|', ':', '/', '#', a space or a tab.
SEPARATORS = ',;|:/# \t'


class DelimiterCheck:
  """Watches the text cells of sequence features chunk by chunk (`update`)
  and raises in `finish` for a delimiter its column never contains."""

  def __init__(self, features):
    self.features = {f.name: f for f in features}
    self.seen = set()  # Features whose delimiter occurred.
    self.example = {}  # Feature -> (value, separator, where, key).

  def update(self, feature, cells, where, key=0) -> None:
    """Looks at one chunk's cells of `feature` (of file `where`; `key`
    orders the chunk among the others, as in `merge`)."""
    if feature.name in self.seen:
      return
    text = pd.Series(np.asarray(cells, dtype=object))
    text = text[text.map(lambda c: isinstance(c, str) and c != '')]
    if text.empty:
      return
    if text.str.contains(feature.delimiter, regex=False).any():
      self.seen.add(feature.name)
      self.example.pop(feature.name, None)
      return
    if feature.name in self.example:
      return
    for sep in SEPARATORS:
      hits = text[text.str.contains(sep, regex=False)]
      if not hits.empty:
        self.example[feature.name] = (hits.iloc[0], sep, where, key)
        return

  def merge(self, other: 'DelimiterCheck') -> None:
    """Takes what `other` saw (of other chunks): the example kept is the
    one of the earliest chunk, as one pass in order keeps."""
    self.seen |= other.seen
    for name, found in other.example.items():
      mine = self.example.get(name)
      if mine is None or found[3] < mine[3]:
        self.example[name] = found
    for name in self.seen:
      self.example.pop(name, None)

  def finish(self) -> None:
    """Raises DataError for the first feature whose delimiter never
    occurred in the training rows while its values hold another
    separator."""
    order = list(self.features)
    found = sorted(
      self.example.items(), key=lambda e: (e[1][3], order.index(e[0]))
    )
    for name, (value, sep, where, _) in found:
      f = self.features[name]
      raise DataError(
        f'{where}: sequence feature {name!r} (column {f.column!r}) has '
        f'delimiter {f.delimiter!r}, which occurs in none of its values, '
        f'but {sep!r} does (e.g. {value[:60]!r}): expected '
        f'dataset.features.{name}.delimiter={sep!r}, or values split by '
        f'{f.delimiter!r}'
      )
