"""The checks of a parsed schema against itself and against a file.

`check_references`: the entries' references to each other (a sequence's
`shared_with`, a history's `item`) and no task label read from a feature
column, as one ConfigError line (schema_parse.parse calls it).
`check_columns`: a file holds every column the schema reads, else a
DataError naming the file.
"""

from mtl.data import schema as sc
from mtl.data.feature_kinds import kind_of
from mtl.errors import ConfigError, DataError, did_you_mean


def check_references(schema: sc.Schema) -> None:
  names = {f.name: f for f in schema.features}
  for f in schema.features:
    where = f'dataset.features.{f.name}'
    ref = getattr(f, 'shared_with', None) or getattr(f, 'item', None)
    if ref is None:
      continue
    key = 'shared_with' if isinstance(f, sc.Sequence) else 'item'
    target = names.get(ref)
    if not isinstance(target, sc.Categorical | sc.Sequence) or ref == f.name:
      raise ConfigError(
        f'{where}.{key} is {ref!r}, expected another categorical or '
        f'sequence feature{did_you_mean(ref, names)}'
      )
    if isinstance(f, sc.History) and not isinstance(target, sc.Categorical):
      raise ConfigError(
        f'{where}.item is {ref!r}, a {type(target).__name__.lower()} '
        'feature, expected a categorical one (the item of each row)'
      )
    if getattr(target, 'shared_with', None):
      raise ConfigError(
        f"{where}.{key} is {ref!r}, which shares {target.shared_with!r}'s "
        f'table itself; name {target.shared_with!r} instead'
      )
    if isinstance(f, sc.Sequence) and (f.hash_buckets or f.min_count != 1):
      raise ConfigError(
        f"{where} shares {ref!r}'s table, so its vocabulary too: "
        'expected no hash_buckets or min_count of its own'
      )
  feature_columns = {
    getattr(f, 'column', None): f.name for f in schema.features
  }
  for t in schema.tasks:
    if t.label in feature_columns:
      raise ConfigError(
        f'dataset.tasks.{t.name}.label reads column {t.label!r}, which is '
        f'also feature {feature_columns[t.label]!r}: a label may not be an '
        'input (remove the feature)'
      )


def check_columns(schema: sc.Schema, found, path) -> None:
  """Raises a DataError naming the file if it lacks a schema column (a
  feature's kind first names the key that reads it)."""
  found = list(found)
  for f in schema.features:
    kind_of(f).check_file(f, found, path)
  for column in schema.columns():
    if column not in found:
      raise DataError(
        f'{path}: has no column {column!r}{did_you_mean(column, found)}, '
        f'expected it for the schema; its columns are {", ".join(found)}'
      )
