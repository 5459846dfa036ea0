"""The feature schema of a table: what each column is and how it is encoded.

Issue 14 items 1 and 3 (recommender-scale inputs). A config describes a
table (mtl/data/table.py) by two plain dicts, which ml_collections holds as
nested ConfigDicts (so `--config.dataset.features.age.normalize=log1p`
works), keyed by name:

  config.dataset.features = {
    'age':     {'kind': 'dense', 'normalize': 'standard', 'missing': 'mean',
                'missing_indicator': True},
    'user_id': {'kind': 'categorical', 'min_count': 2},
    'zip':     {'kind': 'categorical', 'hash_buckets': 1000},
    'tags':    {'kind': 'sequence', 'delimiter': '|', 'max_len': 5},
    'history': {'kind': 'history', 'user': 'user_id', 'item': 'item_id',
                'time': 'timestamp', 'max_len': 20, 'pooling': 'mean'},
  }
  config.dataset.tasks = {
    'rating': {'label': 'rating', 'kind': 'regression', 'scale': 'center'},
    'like':   {'label': 'rating >= 4'},                      # binary
    'watch':  {'label': 'play_ms', 'kind': 'regression',
               'transform': 'log1p', 'where': 'is_click == 1'},
  }

ConfigDict keeps keys sorted, so features and tasks are in NAME order (the
dataset keyword `task_order` puts chosen tasks first: the first task is the
one `select_best` follows). Every entry's `column` defaults to its name.

Feature kinds and their keys (defaults in the dataclasses below):
- dense: a float. `normalize` 'standard' ((x - mean) / std, training
  moments), 'log1p' (log(1 + x), x > -1), 'log1p_standard' (log1p, then
  standardised with the training moments of log1p(x)) or 'none'.
  `missing` (an empty field): 'error' (a DataError naming file, row and
  column), 'mean' (the training mean: 0 after standardising) or 'zero' (0
  after normalising);
  `missing_indicator` adds a 0/1 dense column '<name>_missing'.
  `extract` (dense and categorical): a regular expression; the value is its
  first group's text in the cell ('^(.)': the first character, '(\\d{4})$':
  a trailing year), missing where it does not match.
- categorical: one id per row, from a vocabulary of the training split
  (values seen at least `min_count` times, sorted by their text), or with
  `hash_buckets=N` from `stable_hash` (no vocabulary: unseen values need
  none, and every process and run hashes alike). Ids: 0 is padding (never a
  value), 1 an out-of-vocabulary or missing value, 2.. the vocabulary or
  the N buckets. `embed_dim` sizes its table (0: the config's
  embedding.dim).
- sequence: a multi-valued column (text split by `delimiter`, or a Parquet
  list), the most recent (last) `max_len` values, left-aligned, padded with
  id 0, which is its mask (ids > 0 are values). `shared_with=<feature>`
  embeds it with that categorical or sequence feature's table (and
  vocabulary); `pooling` (a key of mtl.core.layers.embedding
  SEQUENCE_ENCODERS: 'mean', 'sum', or the learned encoders of
  mtl/core/layers/sequence.py, 'din', 'gru', 'lstm', 'transformer',
  'transformer_attn') turns it into one vector.
- history: derived when the data is prepared (table_builder.py): for each
  row, the `item` feature's ids of the same `user`'s interactions strictly
  before its `time` (equal times excluded), the most recent `max_len`,
  oldest first; it shares the item feature's table.
- session: derived labels, no model input (depth). Each
  `user`'s rows ordered by `time` (ties by row) form sessions; a gap above
  `gap` (in the time column's unit) starts a new one. Tasks may name the
  derived columns '<name>.continues' (1 if the user goes on after this
  row within its session, else 0) and '<name>.remaining' (how many rows of
  the session follow it), as labels, conditions or `where`. They are
  computed over the whole log, every split's rows, so a session may run
  past a split boundary.
- count: derived dense inputs (counts.py): over the rows of the same `key`
  column value strictly before the row's `time` (equal times excluded, as
  history), log1p of how many there are and, for each of `labels` (0/1
  columns or conditions), their positive rate smoothed toward the label's
  training-split rate by `prior_strength` rows; standardised with training
  moments as dense inputs '<name>.count' and '<name>.<label>'. Every
  split's rows count, as for history; a missing key gives n = 0, the prior.

Task keys: `label` (a column, or a condition 'column op number' with op one
of == != >= <= > <, which makes a binary label), `kind` ('binary',
'regression', or 'weighted_logistic': a watch time >= 0 as the label,
Covington et al. 2016, mtl/core/losses.py; a condition is binary),
`divide_by` (a column: the label is the label column divided by it, row by
row, before a condition or transform, e.g. a play ratio play_time /
duration or a long view 'play_time >= 0.5' of it; on the sample space a
divisor must be > 0, else a DataError naming the row), `transform` ('none'
or 'log1p', of a regression or weighted_logistic label), `scale` ('none',
'center' or 'standard': training moments of the transformed label on its
sample space), `where` (the sample space: a condition, or a 0/1 column name
meaning 'column == 1'; default every row), `weight` (its loss weight) and
a binary task's training loss (mtl/core/tasks.py): `pos_weight` (> 0, its
positives' BCE weight), `focal_gamma` (>= 0) and `focal_alpha` (in (0, 1))
of the focal loss (Lin et al., ICCV 2017); evaluation reports plain BCE.
A task's label column may not be a feature (ConfigError).

Errors: a schema mistake is one ConfigError line naming the entry and key
(unknown kind or key, bad delimiter, bad value); a column the file lacks is
a DataError naming the file (check_columns).
"""

import dataclasses
import hashlib
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from mtl.core import tasks as tasks_lib
from mtl.errors import ConfigError, DataError, did_you_mean

PAD_ID, OOV_ID, FIRST_ID = 0, 1, 2
NORMALIZE = ('standard', 'log1p', 'log1p_standard', 'none')
MISSING = ('error', 'mean', 'zero')
# mtl.core.layers.embedding.SEQUENCE_ENCODERS (tests/test_sequence.py).
POOLING = (
  'mean',
  'sum',
  'din',
  'gru',
  'lstm',
  'transformer',
  'transformer_attn',
)
TRANSFORMS = ('none', 'log1p')
SCALES = ('none', 'center', 'standard')
TASK_KINDS = ('binary', 'regression', 'weighted_logistic')
SESSION_LABELS = ('continues', 'remaining')  # '<session>.<label>' columns
_OPS = {
  '==': np.equal,
  '!=': np.not_equal,
  '>=': np.greater_equal,
  '<=': np.less_equal,
  '>': np.greater,
  '<': np.less,
}
_CONDITION = re.compile(r'^\s*(.+?)\s*(==|!=|>=|<=|>|<)\s*([^\s=<>!]+)\s*$')


@dataclasses.dataclass(frozen=True)
class Dense:
  name: str
  column: str
  normalize: str = 'standard'
  missing: str = 'error'
  missing_indicator: bool = False
  extract: str = ''


@dataclasses.dataclass(frozen=True)
class Categorical:
  name: str
  column: str
  min_count: int = 1
  hash_buckets: int = 0
  embed_dim: int = 0
  extract: str = ''


@dataclasses.dataclass(frozen=True)
class Sequence:
  name: str
  column: str
  max_len: int = 10
  delimiter: str = '|'
  shared_with: str | None = None
  pooling: str = 'mean'
  min_count: int = 1
  hash_buckets: int = 0
  embed_dim: int = 0


@dataclasses.dataclass(frozen=True)
class History:
  name: str
  user: str
  item: str
  time: str
  max_len: int = 20
  pooling: str = 'mean'


@dataclasses.dataclass(frozen=True)
class Session:
  name: str
  user: str
  time: str
  gap: float = 1800.0


@dataclasses.dataclass(frozen=True)
class Count:
  name: str
  key: str
  time: str
  labels: tuple[str, ...] = ()
  prior_strength: float = 10.0


@dataclasses.dataclass(frozen=True)
class Condition:
  """`column op value` on a column's numbers."""

  column: str
  op: str
  value: float

  def __call__(self, x: np.ndarray) -> np.ndarray:
    return _OPS[self.op](x, self.value)

  def __str__(self) -> str:
    return f'{self.column} {self.op} {self.value:g}'


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  name: str
  label: str  # The label's column.
  kind: str = 'binary'
  condition: Condition | None = None  # label = condition(column)
  transform: str = 'none'
  scale: str = 'none'
  where: Condition | None = None
  weight: float = 1.0
  divide_by: str | None = None  # label = column / divide_by (a ratio)
  pos_weight: float = 1.0  # The loss keys of mtl.core.tasks.Task.
  focal_gamma: float = 0.0
  focal_alpha: float | None = None


KINDS = {
  'dense': Dense,
  'categorical': Categorical,
  'sequence': Sequence,
  'history': History,
  'session': Session,
  'count': Count,
}
Feature = Dense | Categorical | Sequence | History | Session | Count


@dataclasses.dataclass(frozen=True)
class Schema:
  features: tuple[Feature, ...]
  tasks: tuple[TaskSpec, ...]

  def __getitem__(self, name: str) -> Feature:
    return {f.name: f for f in self.features}[name]

  def of(self, kind) -> tuple:
    return tuple(f for f in self.features if isinstance(f, kind))

  def table_of(self, name: str) -> str:
    """The feature whose vocabulary and embedding table `name` uses."""
    f = self[name]
    if isinstance(f, History):
      return self.table_of(f.item)
    if isinstance(f, Sequence) and f.shared_with:
      return self.table_of(f.shared_with)
    return name

  def columns(self) -> tuple[str, ...]:
    """Every file column the schema reads, in first-use order."""
    out = []
    for f in self.features:
      if isinstance(f, History):
        out += [f.user, f.time, self[f.item].column]
      elif isinstance(f, Session):
        out += [f.user, f.time]
      elif isinstance(f, Count):
        out += [f.key, f.time] + [_label_column(t) for t in f.labels]
      else:
        out.append(f.column)
    for t in self.tasks:
      out.append(t.label)
      if t.divide_by:
        out.append(t.divide_by)
      if t.where:
        out.append(t.where.column)
    derived = self.derived()
    return tuple(c for c in dict.fromkeys(out) if c not in derived)

  def derived(self) -> tuple[str, ...]:
    """The columns computed when the data is prepared (sessions')."""
    return tuple(
      f'{f.name}.{label}' for f in self.of(Session) for label in SESSION_LABELS
    )


def _label_column(text: str) -> str:
  """The column a count label reads (a column, or a condition's)."""
  m = _CONDITION.match(text)
  return m[1] if m and re.search(r'[=<>!]', text) else text.strip()


_suggest = did_you_mean


def _check_choice(where: str, key: str, value, choices) -> None:
  if value not in choices:
    raise ConfigError(
      f'{where}.{key} is {value!r}, expected one of {", ".join(choices)}'
      + (_suggest(value, choices) if isinstance(value, str) else '')
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
        f'{where} has unknown key {key!r}{_suggest(key, known)}; '
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


def parse_condition(text, where: str) -> Condition:
  """'column op number' (or a bare column: 'column == 1')."""
  if not isinstance(text, str) or not text.strip():
    raise ConfigError(
      f'{where} is {text!r}, expected a column or a condition like '
      "'is_click == 1'"
    )
  m = _CONDITION.match(text)
  if not m:
    if re.search(r'[=<>!]', text):
      raise ConfigError(
        f'{where} is {text!r}, expected a condition like '
        "'column >= 4' (op one of == != >= <= > <, then a number)"
      )
    return Condition(text.strip(), '==', 1.0)
  try:
    value = float(m[3])
  except ValueError:
    raise ConfigError(
      f'{where} is {text!r}: {m[3]!r} is not a number, expected '
      "'column op number'"
    ) from None
  return Condition(m[1], m[2], value)


def _feature(name: str, entry: Mapping) -> Feature:
  where = f'dataset.features.{name}'
  if not isinstance(entry, Mapping):
    raise ConfigError(f'{where} is {entry!r}, expected a dict of keys')
  entry = dict(entry)
  kind = entry.pop('kind', None)
  _check_choice(where, 'kind', kind, tuple(KINDS))
  cls = KINDS[kind]
  derived = cls in (History, Session, Count)
  column = name if derived else entry.pop('column', name)
  fields = _fields(cls, where, entry, skip=('name', 'column'))
  if cls is Session and 'gap' in fields:
    gap = fields['gap']
    if isinstance(gap, bool) or not isinstance(gap, int | float) or gap <= 0:
      raise ConfigError(
        f'{where}.gap is {gap!r}, expected a number > 0 (in the time '
        "column's unit)"
      )
  if not derived:
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
    _check_choice(where, 'normalize', fields['normalize'], NORMALIZE)
  if 'missing' in fields:
    _check_choice(where, 'missing', fields['missing'], MISSING)
  if 'missing_indicator' in fields and not isinstance(
    fields['missing_indicator'], bool
  ):
    raise ConfigError(
      f'{where}.missing_indicator is {fields["missing_indicator"]!r}, '
      'expected True or False'
    )
  if 'pooling' in fields:
    _check_choice(where, 'pooling', fields['pooling'], POOLING)
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
  if cls is Count:
    fields = _count_fields(where, fields)
  for key in ('user', 'item', 'time', 'shared_with', 'key'):
    if key in fields and fields[key] is not None:
      if not isinstance(fields[key], str) or not fields[key]:
        raise ConfigError(f'{where}.{key} is {fields[key]!r}, expected a name')
  return cls(name=name, **fields)


def _count_fields(where: str, fields: dict) -> dict:
  """A count entry's labels (a tuple of columns or conditions, each
  parsed) and prior_strength (a number > 0), checked."""
  labels = fields.get('labels', ())
  if isinstance(labels, str):
    labels = (labels,)
  if not isinstance(labels, list | tuple):
    raise ConfigError(
      f'{where}.labels is {labels!r}, expected a tuple of 0/1 columns or '
      "conditions like 'rating >= 4'"
    )
  labels = tuple(labels)
  for text in labels:
    parse_condition(text, f'{where}.labels')
  texts = [t.strip() for t in labels]
  if len(set(texts)) != len(texts) or 'count' in texts:
    raise ConfigError(
      f'{where}.labels is {labels!r}, expected distinct labels, none named '
      "'count' (the dense inputs are '<name>.count' and '<name>.<label>')"
    )
  a = fields.get('prior_strength', 10.0)
  if isinstance(a, bool) or not isinstance(a, int | float) or not a > 0:
    raise ConfigError(
      f'{where}.prior_strength is {a!r}, expected a number > 0 (rows of '
      'the prior)'
    )
  if not np.isfinite(a):
    raise ConfigError(
      f'{where}.prior_strength is {a!r}, expected a finite number > 0'
    )
  return {**fields, 'labels': tuple(texts), 'prior_strength': float(a)}


def _task(name: str, entry: Mapping) -> TaskSpec:
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
        f'{where} has unknown key {key!r}{_suggest(key, known)}; a task '
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
  _check_choice(where, 'kind', kind, TASK_KINDS)
  if condition is not None and kind != 'binary':
    raise ConfigError(
      f'{where}.kind is {kind!r} with the condition label '
      f"{entry['label']!r}, expected 'binary'"
    )
  transform = entry.get('transform', 'none')
  scale = entry.get('scale', 'none')
  _check_choice(where, 'transform', transform, TRANSFORMS)
  _check_choice(where, 'scale', scale, SCALES)
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
  return TaskSpec(
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


def parse(features: Mapping, tasks: Mapping, task_order=()) -> Schema:
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
  schema = Schema(parsed, tuple(_task(n, tasks[n]) for n in order))
  _check_references(schema)
  return schema


def _check_references(schema: Schema) -> None:
  names = {f.name: f for f in schema.features}
  for f in schema.features:
    where = f'dataset.features.{f.name}'
    ref = getattr(f, 'shared_with', None) or getattr(f, 'item', None)
    if ref is None:
      continue
    key = 'shared_with' if isinstance(f, Sequence) else 'item'
    target = names.get(ref)
    if not isinstance(target, Categorical | Sequence) or ref == f.name:
      raise ConfigError(
        f'{where}.{key} is {ref!r}, expected another categorical or '
        f'sequence feature{_suggest(ref, names)}'
      )
    if isinstance(f, History) and not isinstance(target, Categorical):
      raise ConfigError(
        f'{where}.item is {ref!r}, a {type(target).__name__.lower()} '
        'feature, expected a categorical one (the item of each row)'
      )
    if getattr(target, 'shared_with', None):
      raise ConfigError(
        f"{where}.{key} is {ref!r}, which shares {target.shared_with!r}'s "
        f'table itself; name {target.shared_with!r} instead'
      )
    if isinstance(f, Sequence) and (f.hash_buckets or f.min_count != 1):
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


def check_columns(schema: Schema, found, path) -> None:
  """Raises a DataError naming the file if it lacks a schema column."""
  found = list(found)
  for column in schema.columns():
    if column not in found:
      raise DataError(
        f'{path}: has no column {column!r}{_suggest(column, found)}, '
        f'expected it for the schema; its columns are {", ".join(found)}'
      )


def stable_hash(values, buckets: int) -> np.ndarray:
  """int64 bucket in [0, buckets) of each value's text: the first 8 bytes
  (little-endian) of BLAKE2b-64 of its UTF-8 form, modulo `buckets`.

  Unlike Python's hash() (salted per process) it is the same in every
  process, run and machine. Each distinct value is hashed once.
  """
  values = np.asarray(values, dtype=object).astype(str)
  unique, inverse = np.unique(values, return_inverse=True)
  digests = np.array(
    [
      int.from_bytes(
        hashlib.blake2b(u.encode('utf-8'), digest_size=8).digest(), 'little'
      )
      % buckets
      for u in unique.tolist()
    ],
    dtype=np.int64,
  )
  return digests[inverse.reshape(-1)].reshape(values.shape)


def fit_vocabulary(counts: Mapping[str, int], min_count: int) -> list[str]:
  """The values seen at least `min_count` times, sorted; value i gets id
  FIRST_ID + i."""
  return sorted(v for v, c in counts.items() if c >= min_count)


class Lookup:
  """`encode_ids` under one encoding, its vocabulary indexed once: building
  the pd.Index of a million values costs more than looking up a chunk, so
  the builder makes one Lookup per table, not one per chunk."""

  def __init__(self, encoding: Mapping):
    self.buckets = encoding.get('hash_buckets')
    self.index = None
    if not self.buckets:
      self.index = pd.Index(encoding['vocabulary'], dtype=object)

  def __call__(self, values) -> np.ndarray:
    values = np.asarray(values, dtype=object)
    missing = pd.isna(values)
    text = values.copy()
    text[missing] = ''
    if pd.api.types.infer_dtype(text.reshape(-1), skipna=False) != 'string':
      text = text.astype(str).astype(object)
    if self.buckets:
      ids = FIRST_ID + stable_hash(text, self.buckets)
    else:
      at = self.index.get_indexer(text.reshape(-1)).reshape(text.shape)
      ids = np.where(at < 0, OOV_ID, FIRST_ID + at)
    return np.where(missing, OOV_ID, ids).astype(np.int32)


def encode_ids(values, encoding: Mapping) -> np.ndarray:
  """int32 ids of values (strings; None or NaN: missing -> OOV_ID) under an
  encoding {'vocabulary': [...]} or {'hash_buckets': N}."""
  return Lookup(encoding)(values)


def table_size(encoding: Mapping) -> int:
  """Rows of an embedding table: padding, OOV, then the values."""
  size = encoding.get('hash_buckets') or len(encoding['vocabulary'])
  return FIRST_ID + size


def split_values(cell, delimiter: str) -> list[str]:
  """The values of one sequence cell: a list as is, text split by the
  delimiter (empty parts dropped), missing as none."""
  if cell is None or (isinstance(cell, float) and cell != cell):
    return []
  if isinstance(cell, list | tuple | np.ndarray):
    return [str(v) for v in cell]
  return [v for v in str(cell).split(delimiter) if v != '']


def last_values(cells, delimiter: str, max_len: int):
  """(values object [total], lengths int64 [n]): each cell's values
  (split_values), the last `max_len` of them, concatenated oldest first.

  Text cells (or missing ones) are split by pyarrow in one call; cells that
  are lists go through split_values one by one.
  """
  import pyarrow as pa
  import pyarrow.compute as pc

  cells = np.asarray(cells, dtype=object)
  n = len(cells)
  if n and pd.api.types.infer_dtype(cells, skipna=True) in ('string', 'empty'):
    parts = pc.split_pattern(
      pa.array(cells, pa.string(), from_pandas=True), delimiter
    )
    lengths = (
      pc.list_value_length(parts).fill_null(0).to_numpy().astype(np.int64)
    )
    values = parts.flatten().to_numpy(zero_copy_only=False).astype(object)
    rows = np.repeat(np.arange(n), lengths)
    kept = values != ''
    values, rows = values[kept], rows[kept]
    lengths = np.bincount(rows, minlength=n).astype(np.int64)
  else:
    lists = [split_values(c, delimiter) for c in cells]
    lengths = np.array([len(v) for v in lists], np.int64)
    values = np.array([x for v in lists for x in v], dtype=object)
  last = _positions(lengths) >= np.repeat(lengths - max_len, lengths)
  return values[last], np.minimum(lengths, max_len)


def _positions(lengths: np.ndarray) -> np.ndarray:
  """int [sum(lengths)]: each value's position within its row, for rows
  of `lengths` values laid end to end."""
  starts = np.cumsum(lengths) - lengths
  return np.arange(int(lengths.sum())) - np.repeat(starts, lengths)


def pad_ids(ids: np.ndarray, lengths: np.ndarray, max_len: int) -> np.ndarray:
  """int32 [n, max_len]: row r holds the next lengths[r] of `ids` (each at
  most max_len), padded with PAD_ID at the end."""
  out = np.full((len(lengths), max_len), PAD_ID, np.int32)
  out[np.repeat(np.arange(len(lengths)), lengths), _positions(lengths)] = ids
  return out


def encode_sequences(cells, delimiter: str, max_len: int, lookup) -> np.ndarray:
  """int32 [n, max_len]: the last max_len of each cell's split_values,
  encoded by `lookup`, oldest first, padded with PAD_ID at the end; split
  and encoded vectorised (last_values, one `lookup` call)."""
  values, lengths = last_values(cells, delimiter, max_len)
  return pad_ids(lookup(values), lengths, max_len)
