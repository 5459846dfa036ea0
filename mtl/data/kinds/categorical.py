"""Feature kind 'categorical': one id a row from its vocabulary table
(schema.py says its keys; encoding.py the ids). `Vocabularies` fits the
tables of categorical and sequence features on the training split."""

from mtl.data import schema as sc
from mtl.data.encoding import arrow_ints, arrow_text
from mtl.data.kinds.base import Kind, Rows, own_table
from mtl.data.table_files import cell_values
from mtl.data.text_counts import TextCounts


class Vocabularies:
  """The tables of the features that own one: a vocabulary of the values
  of the training rows (`values(f, chunk)`: text), or its hash settings."""

  def __init__(self, features, schema: sc.Schema, values):
    self.owners = [f for f in features if schema.table_of(f.name) == f.name]
    self.counted = [f for f in self.owners if not f.hash_buckets]
    self.counts = {f.name: TextCounts() for f in self.counted}
    self.values = values

  def update(self, rows: Rows) -> None:
    for f in self.counted:
      self.counts[f.name].add(self.values(f, rows.chunk))

  def merge(self, other: 'Vocabularies') -> None:
    for name, counts in other.counts.items():
      self.counts[name].merge(counts)

  def finish(self) -> dict:
    tables = {}
    for f in self.owners:
      if f.hash_buckets:
        tables[f.name] = {'hash_buckets': f.hash_buckets}
      else:
        vocabulary = self.counts[f.name].vocabulary(f.min_count)
        tables[f.name] = {'vocabulary': vocabulary}
    return {'tables': tables}


def _values(f: sc.Categorical, chunk):
  values = cell_values(f, chunk).dropna()
  ints = arrow_ints(values)  # Counted as numbers (TextCounts).
  if ints is not None:
    return ints
  text = arrow_text(values)
  return text if text is not None else values.astype(str)


class CategoricalKind(Kind):
  spec = sc.Categorical

  def fitter(self, features, schema, plan):
    return Vocabularies(features, schema, _values)

  def inputs(self, f, schema):
    return [], [f.name]

  def embedding(self, f, schema, encoding):
    return own_table(f, schema, encoding)

  def encode(self, f, rows: Rows):
    ids = rows.lookup(f.name)(cell_values(f, rows.chunk))
    return [], [ids[:, None]]
