"""The feature kinds of the table schema, by name: `FEATURE_KINDS`.

A kind (kinds/base.py: the FeatureKind protocol) owns its entry's
dataclass, its key checks, what it fits on the training split, its model
inputs and the encoding of a chunk of rows into them. A new kind is one
file and one line here, or, outside mtl, one line in the `register()` of a
module named in `config.plugins`:

  FEATURE_KINDS['bucket'] = BucketKind()

The schema's entries then take `'kind': 'bucket'` (schema_parse.py); the
table builder (table_fit.py, table_encode.py), the dataset's layout
(table.layout) and the encoding of given rows (preprocessing.Encoder, so
mtl-predict and serving) reach it only through this dict.
"""

import numpy as np

from mtl.data import schema as sc
from mtl.data.kinds.base import FeatureKind, Rows
from mtl.data.kinds.categorical import CategoricalKind
from mtl.data.kinds.count import CountKind
from mtl.data.kinds.dense import DenseKind
from mtl.data.kinds.history import HistoryKind
from mtl.data.kinds.sequence import SequenceKind
from mtl.data.kinds.session import SessionKind
from mtl.errors import ConfigError

FEATURE_KINDS: dict[str, FeatureKind] = {
  'dense': DenseKind(),
  'categorical': CategoricalKind(),
  'sequence': SequenceKind(),
  'history': HistoryKind(),
  'session': SessionKind(),
  'count': CountKind(),
}


def kind_of(f: sc.Spec) -> FeatureKind:
  """The registered kind of schema entry `f`."""
  for kind in FEATURE_KINDS.values():
    if type(f) is kind.spec:
      return kind
  raise ConfigError(
    f'dataset.features.{f.name} is a {type(f).__name__}, whose kind is not '
    'registered, expected one of FEATURE_KINDS (mtl/data/feature_kinds.py)'
  )


def fitters(schema: sc.Schema, plan) -> list:
  """Each kind's fitter of its features, in FEATURE_KINDS order."""
  out = []
  for kind in FEATURE_KINDS.values():
    features = schema.of(kind.spec)
    fitter = kind.fitter(features, schema, plan) if features else None
    if fitter is not None:
      out.append(fitter)
  return out


def inputs(schema: sc.Schema) -> tuple[list, list]:
  """(dense names, sparse names) of the schema's model inputs."""
  dense, sparse = [], []
  for f in schema.features:
    d, s = kind_of(f).inputs(f, schema)
    dense += d
    sparse += s
  return dense, sparse


def encode(rows: Rows, empty: int) -> dict:
  """{'dense': [n, F] f32, 'sparse': [n, S] i32} of the rows, feature by
  feature; a block without columns is `empty` columns of zeros."""
  dense, sparse = [], []
  for f in rows.schema.features:
    d, s = kind_of(f).encode(f, rows)
    dense += d
    sparse += s
  n = len(rows.chunk)
  return {
    'dense': np.stack(dense, 1).astype(np.float32)
    if dense
    else np.zeros((n, empty), np.float32),
    'sparse': np.concatenate(sparse, 1).astype(np.int32)
    if sparse
    else np.zeros((n, empty), np.int32),
  }
