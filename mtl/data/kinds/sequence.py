"""Feature kind 'sequence': a multi-valued column's last `max_len` values
as ids, padded (schema.py says its keys; encoding.py splits and encodes).
When fitted, its delimiter is checked against its column (delimiters.py)
before its vocabulary is."""

from mtl.data import delimiters
from mtl.data import schema as sc
from mtl.data.kinds.base import Kind, Rows, own_table
from mtl.data.kinds.categorical import Vocabularies
from mtl.data.sequences import encode_sequences, last_text


def _values(f: sc.Sequence, chunk):
  return last_text(chunk[f.column], f.delimiter, f.max_len)[0]


class Fitter:
  """The delimiter check of every sequence feature, then the tables."""

  def __init__(self, features, schema):
    self.features = features
    self.split_by = delimiters.DelimiterCheck(features)
    self.tables = Vocabularies(features, schema, _values)

  def update(self, rows: Rows) -> None:
    for f in self.features:
      self.split_by.update(f, rows.chunk[f.column], rows.source.path, rows.key)
    self.tables.update(rows)

  def merge(self, other: 'Fitter') -> None:
    self.split_by.merge(other.split_by)
    self.tables.merge(other.tables)

  def finish(self) -> dict:
    self.split_by.finish()  # Before any vocabulary is fitted on whole strings.
    return self.tables.finish()


class SequenceKind(Kind):
  spec = sc.Sequence

  def fitter(self, features, schema, plan):
    return Fitter(features, schema)

  def inputs(self, f, schema):
    return [], [f'{f.name}[{j}]' for j in range(f.max_len)]

  def embedding(self, f, schema, encoding):
    return own_table(f, schema, encoding, f.pooling)

  def encode(self, f, rows: Rows):
    lookup = rows.lookup(rows.schema.table_of(f.name))
    ids = encode_sequences(rows.chunk[f.column], f.delimiter, f.max_len, lookup)
    return [], [ids]
