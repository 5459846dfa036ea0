"""The config's features and tasks dicts parsed into a Schema (schema.py).

`parse` turns `config.dataset.features` and `config.dataset.tasks` into a
Schema: each entry's keys checked against its kind's dataclass (unknown or
missing keys, values out of range, bad delimiters, regular expressions and
conditions: the keys kinds share here, the rest by the kind's `check`,
feature_kinds.py), then the entries' references to each other
(schema_checks.check_references). A mistake is one ConfigError line naming
the entry and key.
"""

import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from mtl.core import tasks as tasks_lib
from mtl.data import schema as sc
from mtl.data.conditions import parse_condition
from mtl.data.feature_kinds import FEATURE_KINDS
from mtl.data.schema_checks import check_references
from mtl.errors import ConfigError, did_you_mean


def _check_choice(where: str, key: str, value, choices) -> None:
  if value not in choices:
    raise ConfigError(
      f'{where}.{key} is {value!r}, expected one of {", ".join(choices)}'
      + (did_you_mean(value, choices) if isinstance(value, str) else '')
    )


def _check_int(where: str, key: str, value, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ConfigError(f'{where}.{key} is {value!r}, expected an int >= {low}')


def _fields(cls, where: str, entry: Mapping, skip=('name',)) -> dict:
  """The entry's keys as the dataclass's fields: unknown keys fail."""
  known = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
  for key in entry:
    if key not in known:
      raise ConfigError(
        f'{where} has unknown key {key!r}{did_you_mean(key, known)}; '
        f'a {cls.__name__.lower()} entry takes {", ".join(known)}'
      )
  required = [
    f.name
    for f in dataclasses.fields(cls)
    if f.name not in skip
    and f.default is dataclasses.MISSING
    and f.name not in entry
  ]
  if required:
    raise ConfigError(f'{where} is missing key {required[0]!r}')
  return dict(entry)


def _feature(name: str, entry: Mapping) -> sc.Feature:
  where = f'dataset.features.{name}'
  if not isinstance(entry, Mapping):
    raise ConfigError(f'{where} is {entry!r}, expected a dict of keys')
  entry = dict(entry)
  kind = entry.pop('kind', None)
  _check_choice(where, 'kind', kind, tuple(FEATURE_KINDS))
  kind = FEATURE_KINDS[kind]
  cls = kind.spec
  column = name if kind.derived else entry.pop('column', name)
  fields = _fields(cls, where, entry, skip=('name', 'column'))
  if not kind.derived:
    if not isinstance(column, str) or not column:
      raise ConfigError(f'{where}.column is {column!r}, expected a name')
    fields['column'] = column
  for key in ('max_len',):
    if key in fields:
      _check_int(where, key, fields[key], 1)
  for key in ('min_count',):
    if key in fields:
      _check_int(where, key, fields[key], 1)
  for key in ('hash_buckets', 'embed_dim'):
    if key in fields:
      _check_int(where, key, fields[key], 0)
  if 'normalize' in fields:
    _check_choice(where, 'normalize', fields['normalize'], sc.NORMALIZE)
  if 'missing' in fields:
    _check_choice(where, 'missing', fields['missing'], sc.MISSING)
  if 'missing_indicator' in fields and not isinstance(
    fields['missing_indicator'], bool
  ):
    raise ConfigError(
      f'{where}.missing_indicator is {fields["missing_indicator"]!r}, '
      'expected True or False'
    )
  if 'pooling' in fields:
    _check_choice(where, 'pooling', fields['pooling'], sc.POOLING)
  if 'extract' in fields:
    try:
      groups = re.compile(fields['extract']).groups
    except (re.error, TypeError):
      groups = 0
    if not groups:
      raise ConfigError(
        f'{where}.extract is {fields["extract"]!r}, expected a regular '
        "expression with a group, e.g. '^(.)' or '(\\d{4})$'"
      )
  if 'delimiter' in fields:
    d = fields['delimiter']
    if not isinstance(d, str) or len(d) != 1 or d.isspace() and d != '\t':
      raise ConfigError(
        f'{where}.delimiter is {d!r}, expected one character that is not '
        "blank (e.g. '|' or ';')"
      )
  fields = kind.check(where, fields)
  for key in ('user', 'item', 'time', 'shared_with', 'key'):
    if key in fields and fields[key] is not None:
      if not isinstance(fields[key], str) or not fields[key]:
        raise ConfigError(f'{where}.{key} is {fields[key]!r}, expected a name')
  return cls(name=name, **fields)


def _task(name: str, entry: Mapping) -> sc.TaskSpec:
  where = f'dataset.tasks.{name}'
  if not isinstance(entry, Mapping):
    raise ConfigError(f'{where} is {entry!r}, expected a dict of keys')
  known = (
    'label',
    'kind',
    'transform',
    'scale',
    'where',
    'weight',
    'divide_by',
    *tasks_lib.LOSS_DEFAULTS,
  )
  for key in entry:
    if key not in known:
      raise ConfigError(
        f'{where} has unknown key {key!r}{did_you_mean(key, known)}; a task '
        f'takes {", ".join(known)}'
      )
  if 'label' not in entry:
    raise ConfigError(f"{where} is missing key 'label'")
  text = entry['label']
  if not isinstance(text, str) or not text.strip():
    raise ConfigError(
      f'{where}.label is {text!r}, expected a column or a condition like '
      "'rating >= 4'"
    )
  condition = (
    parse_condition(text, f'{where}.label')
    if re.search(r'[=<>!]', text)
    else None
  )
  kind = entry.get('kind', 'binary')
  _check_choice(where, 'kind', kind, sc.TASK_KINDS)
  if condition is not None and kind != 'binary':
    raise ConfigError(
      f'{where}.kind is {kind!r} with the condition label '
      f"{entry['label']!r}, expected 'binary'"
    )
  transform = entry.get('transform', 'none')
  scale = entry.get('scale', 'none')
  _check_choice(where, 'transform', transform, sc.TRANSFORMS)
  _check_choice(where, 'scale', scale, sc.SCALES)
  if kind == 'weighted_logistic' and scale != 'none':
    raise ConfigError(
      f"{where}.scale is {scale!r}, expected 'none' for a weighted_logistic "
      'task (its label is a weight >= 0)'
    )
  if kind == 'binary' and (transform, scale) != ('none', 'none'):
    raise ConfigError(
      f'{where}: transform {transform!r} / scale {scale!r} apply to a '
      "regression label, expected 'none' for a binary task"
    )
  weight = entry.get('weight', 1.0)
  if isinstance(weight, bool) or not isinstance(weight, int | float):
    raise ConfigError(f'{where}.weight is {weight!r}, expected a number >= 0')
  if not np.isfinite(weight) or weight < 0:
    raise ConfigError(f'{where}.weight is {weight!r}, expected a number >= 0')
  where_c = entry.get('where')
  if where_c is not None:
    where_c = parse_condition(where_c, f'{where}.where')
  divide_by = entry.get('divide_by')
  if divide_by is not None and (
    not isinstance(divide_by, str) or not divide_by.strip()
  ):
    raise ConfigError(
      f'{where}.divide_by is {divide_by!r}, expected a column name'
    )
  return sc.TaskSpec(
    name=name,
    label=condition.column if condition else text.strip(),
    kind=kind,
    condition=condition,
    transform=transform,
    scale=scale,
    where=where_c,
    weight=float(weight),
    divide_by=divide_by.strip() if divide_by else None,
    **tasks_lib.loss_keys(entry, where, kind),
  )


def parse(features: Mapping, tasks: Mapping, task_order=()) -> sc.Schema:
  """The Schema of the config's `features` and `tasks` dicts.

  Raises:
    ConfigError: one line naming the first wrong entry and key.
  """
  for what, d in (('features', features), ('tasks', tasks)):
    if not isinstance(d, Mapping) or not d:
      raise ConfigError(
        f'dataset.{what} is {dict(d) if isinstance(d, Mapping) else d!r}, '
        f'expected a non-empty dict of {what} by name (mtl/data/schema.py)'
      )
  parsed = tuple(_feature(n, features[n]) for n in sorted(features))
  order = list(task_order) + sorted(set(tasks) - set(task_order))
  for n in task_order:
    if n not in tasks:
      raise ConfigError(
        f'dataset.task_order names {n!r}, which is not a task; tasks: '
        f'{", ".join(sorted(tasks))}'
      )
  if len(set(task_order)) != len(task_order):
    raise ConfigError(f'dataset.task_order {tuple(task_order)} repeats a task')
  schema = sc.Schema(parsed, tuple(_task(n, tasks[n]) for n in order))
  check_references(schema)
  return schema
