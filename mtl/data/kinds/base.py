"""What a feature kind of the table schema defines (feature_kinds.py
registers each by name).

A kind owns its schema entry's dataclass (`spec`, a schema.Spec), the
checks of its keys beyond the shared ones (`check`), what it fits on the
training split (`fitter`), its model inputs (`inputs`, `embedding`) and
the encoding of a chunk of rows into them (`encode`): the one function
both the table builder (table_encode.encoded_chunks) and the encoding of
given rows (preprocessing.Encoder, serving) call; with the columns a given
row brings for it (`given`) and its own check of a file's columns
(`check_file`). `Kind` holds the defaults of a kind that reads one column
and fits nothing.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mtl.core.layers.embedding import Column
from mtl.data import schema as sc
from mtl.data.encoding import table_size


@dataclasses.dataclass
class Rows:
  """A chunk of rows to encode (or fit on), and what encodes them.

  Attributes:
    schema: the table's schema.
    chunk: the rows' cells (text; missing: None or NaN).
    offsets: int [n]: each row's 0-based data row in its file (messages).
    source: the file (table_files.Source; its path names it in messages).
    encoding: the fitted encoding (table_fit.fit); None while fitting.
    lookup: a table's encoding.Lookup by table name (None while fitting).
    derive: (spec, rows) -> a derived kind's values of the rows:
      table_plan.Plan.values when preparing, derived.Derived.values for
      given rows.
    rows: int [n]: the rows' global positions when preparing, else None.
  """

  schema: sc.Schema
  chunk: pd.DataFrame
  offsets: np.ndarray
  source: Any
  encoding: dict | None
  lookup: Callable | None
  derive: Callable
  rows: np.ndarray | None = None

  @property
  def key(self):
    """The rows' first global position, which orders chunks (their
    Moments parts, cb.Moments), or None."""
    return (
      None if self.rows is None or not len(self.rows) else int(self.rows[0])
    )

  def derived(self, f) -> np.ndarray:
    """The derived values of feature `f` for these rows."""
    return self.derive(f, self)


class Fitter(Protocol):
  """What a kind fits on the training split, chunk by chunk."""

  def update(self, rows: Rows) -> None:
    """Takes in one chunk of training rows."""

  def merge(self, other) -> None:
    """Takes in a fitter of the same features that took in other chunks
    (beam_prepare.py fits in several processes): finish then gives what
    one fitter that took in every chunk gives, bit for bit."""

  def finish(self) -> dict:
    """{section: {name: fitted}}: merged into the encoding's sections
    ('tables', 'dense', ... ; table_fit.fit)."""


class FeatureKind(Protocol):
  """A feature kind of the table schema (module docstring)."""

  spec: type  # Its entry's frozen dataclass, a schema.Spec.
  derived: bool  # Derived over the log: its entry has no `column` key.

  def check(self, where: str, fields: dict) -> dict:
    """Its entry's keys checked (one ConfigError line naming `where` and
    the key) and normalised; the shared keys are checked already."""

  def fitter(self, features, schema: sc.Schema, plan) -> Fitter | None:
    """What its `features` fit on the training rows (None: nothing)."""

  def inputs(self, f, schema: sc.Schema) -> tuple[list, list]:
    """(dense input names, sparse input names) of feature `f`."""

  def embedding(self, f, schema: sc.Schema, encoding: dict) -> Column | None:
    """The Column (size, table, pooling) of each of its sparse inputs."""

  def encode(self, f, rows: Rows) -> tuple[list, list]:
    """([float [n]] dense columns, [int [n, k]] sparse blocks) of the rows,
    as many as `inputs` names."""

  def given(self, f) -> list[str]:
    """The columns a given row (mtl-predict, serving) holds for it."""

  def check_file(self, f, found, path) -> None:
    """A DataError naming its key whose column file `path` lacks (before
    schema_checks.check_columns names any column the schema reads)."""


class Kind:
  """Defaults: one `column`, nothing to check or fit, no embedding."""

  derived = False

  def check(self, where: str, fields: dict) -> dict:
    return fields

  def fitter(self, features, schema, plan):
    return None

  def embedding(self, f, schema, encoding):
    return None

  def given(self, f) -> list[str]:
    return [f.column]

  def check_file(self, f, found, path) -> None:
    pass


def own_table(f, schema: sc.Schema, encoding: dict, pooling=None) -> Column:
  """The Column of a feature embedded with its (or a shared) vocabulary
  table of the fitted encoding."""
  table = schema.table_of(f.name)
  size = table_size(encoding['tables'][table])
  dim = schema[table].embed_dim
  return Column(size, feature=f.name, table=table, pooling=pooling, dim=dim)
