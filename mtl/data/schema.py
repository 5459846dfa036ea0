"""The feature schema of a table: what each column is and how it is encoded.

Recommender-scale inputs. A config describes a
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
  `hash_buckets=N` from `stable_hash` (encoding.py; no vocabulary: unseen
  values need none, and every process and run hashes alike). Ids: 0 is
  padding (never a value), 1 an out-of-vocabulary or missing value, 2..
  the vocabulary or the N buckets. `embed_dim` sizes its table (0: the
  config's embedding.dim).
- sequence: a multi-valued column (text split by `delimiter`, or a Parquet
  list), the most recent (last) `max_len` values, left-aligned, padded with
  id 0, which is its mask (ids > 0 are values). `shared_with=<feature>`
  embeds it with that categorical or sequence feature's table (and
  vocabulary); `pooling` (a key of mtl.core.layers.embedding
  SEQUENCE_ENCODERS: 'mean', 'sum', or the learned encoders of
  mtl/core/layers/sequence.py, 'din', 'gru', 'lstm', 'transformer',
  'transformer_attn') turns it into one vector.
- history: derived when the data is prepared (table_plan.py): for each
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
a DataError naming the file (schema_checks.check_columns).

This module holds the schema's types: each kind's entry is a frozen
dataclass subclassing `Spec`, and feature_kinds.py registers the kinds
(FEATURE_KINDS: their checks, fitting, inputs and encoding, in kinds/);
schema_parse.py parses the two dicts into them (schema_parse.parse),
conditions.py the conditions, and encoding.py turns values into the ids
above (stable_hash, vocabularies, lookups, sequences).
"""

import dataclasses

from mtl.data.conditions import Condition, label_column

NORMALIZE = ('standard', 'log1p', 'log1p_standard', 'none')
MISSING = ('error', 'mean', 'zero')
# mtl.core.layers.embedding.SEQUENCE_ENCODERS (tests/core/test_sequence.py).
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


class Spec:
  """A feature's schema entry: a frozen dataclass with `name` (and, unless
  its kind derives it over the log, `column`), one per feature kind
  (feature_kinds.py). What a Schema asks of every entry:"""

  def reads(self, schema: 'Schema') -> list[str]:
    """The file columns it reads."""
    return [self.column]

  def shares(self) -> str | None:
    """The feature whose embedding table (and vocabulary) it uses."""
    return None

  def derived_labels(self) -> tuple[str, ...]:
    """The columns it computes when the data is prepared."""
    return ()


@dataclasses.dataclass(frozen=True)
class Dense(Spec):
  name: str
  column: str
  normalize: str = 'standard'
  missing: str = 'error'
  missing_indicator: bool = False
  extract: str = ''


@dataclasses.dataclass(frozen=True)
class Categorical(Spec):
  name: str
  column: str
  min_count: int = 1
  hash_buckets: int = 0
  embed_dim: int = 0
  extract: str = ''


@dataclasses.dataclass(frozen=True)
class Sequence(Spec):
  name: str
  column: str
  max_len: int = 10
  delimiter: str = '|'
  shared_with: str | None = None
  pooling: str = 'mean'
  min_count: int = 1
  hash_buckets: int = 0
  embed_dim: int = 0

  def shares(self) -> str | None:
    return self.shared_with


@dataclasses.dataclass(frozen=True)
class History(Spec):
  name: str
  user: str
  item: str
  time: str
  max_len: int = 20
  pooling: str = 'mean'

  def reads(self, schema) -> list[str]:
    return [self.user, self.time, schema[self.item].column]

  def shares(self) -> str | None:
    return self.item


@dataclasses.dataclass(frozen=True)
class Session(Spec):
  name: str
  user: str
  time: str
  gap: float = 1800.0

  def reads(self, schema) -> list[str]:
    return [self.user, self.time]

  def derived_labels(self) -> tuple[str, ...]:
    return tuple(f'{self.name}.{label}' for label in SESSION_LABELS)


@dataclasses.dataclass(frozen=True)
class Count(Spec):
  name: str
  key: str
  time: str
  labels: tuple[str, ...] = ()
  prior_strength: float = 10.0

  def reads(self, schema) -> list[str]:
    return [self.key, self.time] + [label_column(t) for t in self.labels]


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


Feature = Spec


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
    shared = self[name].shares()
    return self.table_of(shared) if shared else name

  def columns(self) -> tuple[str, ...]:
    """Every file column the schema reads, in first-use order."""
    out = []
    for f in self.features:
      out += f.reads(self)
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
    return tuple(c for f in self.features for c in f.derived_labels())
