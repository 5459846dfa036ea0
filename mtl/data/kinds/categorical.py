"""Feature kind 'categorical': one id a row from its vocabulary table
(schema.py says its keys; encoding.py the ids). `Vocabularies` fits the
tables of categorical and sequence features on the training split."""

from collections import Counter

import pandas as pd

from mtl.data import schema as sc
from mtl.data.encoding import fit_vocabulary
from mtl.data.kinds.base import Kind, Rows, own_table
from mtl.data.table_files import cell_values


class Vocabularies:
  """The tables of the features that own one: a vocabulary of the values
  of the training rows (`values(f, chunk)`: text), or its hash settings."""

  def __init__(self, features, schema: sc.Schema, values):
    self.owners = [f for f in features if schema.table_of(f.name) == f.name]
    self.counted = [f for f in self.owners if not f.hash_buckets]
    self.counts = {f.name: Counter() for f in self.counted}
    self.values = values

  def update(self, rows: Rows) -> None:
    for f in self.counted:
      values = self.values(f, rows.chunk)
      counts = pd.Series(values).value_counts().to_dict()
      self.counts[f.name].update(counts)

  def finish(self) -> dict:
    tables = {}
    for f in self.owners:
      if f.hash_buckets:
        tables[f.name] = {'hash_buckets': f.hash_buckets}
      else:
        vocabulary = fit_vocabulary(self.counts[f.name], f.min_count)
        tables[f.name] = {'vocabulary': vocabulary}
    return {'tables': tables}


def _values(f: sc.Categorical, chunk):
  return cell_values(f, chunk).dropna().astype(str)


class CategoricalKind(Kind):
  spec = sc.Categorical

  def fitter(self, features, schema, plan):
    return Vocabularies(features, schema, _values)

  def inputs(self, f, schema):
    return [], [f.name]

  def embedding(self, f, schema, encoding):
    return own_table(f, schema, encoding)

  def encode(self, f, rows: Rows):
    values = cell_values(f, rows.chunk).to_numpy(object)
    return [], [rows.lookup(f.name)(values)[:, None]]
