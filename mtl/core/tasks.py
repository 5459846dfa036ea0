"""Tasks of a multi-task problem.

The order of `tasks` is fixed for a run: row t of `labels` and `mask` is
always task t. Most tasks are trained and scored on their own model output.
Two fields serve entire-space models and evaluation-only views:

- `train=False`: a metric-only task, evaluated (AUC, loss) but never in the
  training loss nor seen by a balancing method; e.g. ESMM's CVR on clicked
  impressions, which ESMM never trains directly.
- `head='<task>'`: the task is scored on another task's model output; e.g.
  the CVR prediction scored over all impressions against the true
  conversion propensity of synthetic data.

The model has one output ("head") per task whose `head` is None, in task
order (`head_rows`); the train step sees the trained tasks (`train_rows`).

A binary task's training loss may weight its positives (`pos_weight`) or
focus on hard examples (`focal_gamma`, `focal_alpha`: Lin et al., "Focal
Loss for Dense Object Detection", ICCV 2017; mtl/core/losses.py). Its
evaluation logloss stays the plain BCE, comparable across runs.
"""

import dataclasses
import math
from collections.abc import Mapping

from mtl.errors import ConfigError

KINDS = ('binary', 'regression', 'weighted_logistic')


@dataclasses.dataclass(frozen=True)
class Task:
  """One prediction task.

  Attributes:
    name: short name used in metric keys (`val/auc/<name>`).
    kind: 'binary' (BCE on logits, AUC), 'regression' (MSE) or
      'weighted_logistic' (the label a watch time >= 0: positives, label >
      0, weighted by it, negatives by 1; exp(logit) estimates the expected
      watch time; losses.weighted_logistic).
    weight: the task's base loss weight before any balancing method.
    train: False for a metric-only task (evaluated, never trained on).
    head: the task whose model output this task is scored on (None: its
      own).
    pos_weight: a binary task's positives' weight w in its training loss
      -(w y log p + (1 - y) log(1 - p)) (1: plain BCE).
    focal_gamma: the focusing parameter gamma of a binary task's focal loss
      -alpha_t (1 - p_t)^gamma log p_t (0: no focusing).
    focal_alpha: alpha of the focal loss' alpha_t (alpha for positives,
      1 - alpha for negatives), in (0, 1); None: alpha_t = 1.
    label_std: the std a regression's label was divided by (a table's
      `scale: 'standard'`), so that `rmse` = sqrt(mse) * label_std is in
      the (transformed) label's own units.
  """

  name: str
  kind: str = 'binary'
  weight: float = 1.0
  train: bool = True
  head: str | None = None
  pos_weight: float = 1.0
  focal_gamma: float = 0.0
  focal_alpha: float | None = None
  label_std: float = 1.0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ConfigError(
        f'task {self.name!r}: kind {self.kind!r} is not one of {KINDS}'
      )
    given = {
      k: getattr(self, k)
      for k, default in LOSS_DEFAULTS.items()
      if getattr(self, k) != default
    }
    loss_keys(given, f'task {self.name!r}', self.kind)
    if not (isinstance(self.label_std, int | float) and self.label_std > 0):
      raise ConfigError(
        f'task {self.name!r}: label_std is {self.label_std!r}, expected a '
        'number > 0'
      )

  @property
  def plain_loss(self) -> bool:
    """True when the training loss is the evaluation's (no loss keys)."""
    return all(getattr(self, k) == d for k, d in LOSS_DEFAULTS.items())


LOSS_DEFAULTS = {'pos_weight': 1.0, 'focal_gamma': 0.0, 'focal_alpha': None}


def _number(value) -> bool:
  return (
    isinstance(value, int | float)
    and not isinstance(value, bool)
    and math.isfinite(value)
  )


def loss_keys(entry: Mapping, where, kind: str) -> dict:
  """The loss keys of a task entry (`LOSS_DEFAULTS`), checked: {key: value}.

  Raises ConfigError (one line naming the key: `where(key)`, or
  '<where>.<key>' for a string) for a key on a task that is not binary,
  pos_weight <= 0, focal_gamma < 0 or a focal_alpha outside (0, 1).
  """
  path = where if callable(where) else lambda key: f'{where}.{key}'
  out = {}
  for key in LOSS_DEFAULTS:
    if key not in entry:
      continue
    value, at = entry[key], path(key)
    if kind != 'binary':
      raise ConfigError(
        f'{at} is {value!r} on a {kind} task, expected it only on a binary task'
      )
    if key == 'pos_weight' and not (_number(value) and value > 0):
      raise ConfigError(f'{at} is {value!r}, expected a number > 0')
    if key == 'focal_gamma' and not (_number(value) and value >= 0):
      raise ConfigError(f'{at} is {value!r}, expected a number >= 0')
    if key == 'focal_alpha' and not (
      value is None or (_number(value) and 0 < value < 1)
    ):
      raise ConfigError(
        f'{at} is {value!r}, expected None or a number in (0, 1)'
      )
    out[key] = value if value is None else float(value)
  return out


def task_loss_pairs(task_loss: Mapping | None) -> dict:
  """{task: {key: value}} of the config's `task_loss` ({key: ((task,
  value), ...)}), checked but for the tasks' names and kinds."""
  out = {}
  items = () if task_loss is None else task_loss.items()
  for key, pairs in items:
    if key not in LOSS_DEFAULTS:
      raise ConfigError(
        f'task_loss.{key} is not a loss key, expected one of '
        f'{", ".join(LOSS_DEFAULTS)}'
      )
    for pair in pairs or ():
      if not (
        isinstance(pair, tuple | list)
        and len(pair) == 2
        and isinstance(pair[0], str)
      ):
        raise ConfigError(
          f'task_loss.{key} holds {pair!r}, expected (task name, value) pairs'
        )
      name, value = pair
      at = f'task_loss.{key}[{name!r}]'
      out.setdefault(name, {}).update(
        loss_keys({key: value}, lambda _, at=at: at, 'binary')
      )
  return out


def with_task_loss(tasks, task_loss: Mapping | None) -> tuple:
  """`tasks` with the config's `task_loss` keys set (over a table task
  entry's own); one-line ConfigError for an unknown or non-binary task."""
  per_task = task_loss_pairs(task_loss)
  names = [t.name for t in tasks]
  for name, keys in per_task.items():
    if name not in names:
      key = next(iter(keys))
      raise ConfigError(
        f'task_loss.{key} names task {name!r}, expected one of {names}'
      )
  out = []
  for t in tasks:
    keys = per_task.get(t.name, {})
    at = {k: f'task_loss.{k}[{t.name!r}]' for k in keys}
    loss_keys(keys, lambda k, at=at: at[k], t.kind)
    out.append(dataclasses.replace(t, **keys) if keys else t)
  return tuple(out)


def task_of(spec, label_moments: Mapping) -> Task:
  """The Task of a table's task entry (mtl.data.schema.TaskSpec), with its
  loss keys and, for `scale: 'standard'`, the training std its label was
  divided by (`label_moments[name]['std']`, the prepared encoding's)."""
  std = 1.0
  if spec.kind == 'regression' and spec.scale == 'standard':
    std = float(label_moments[spec.name]['std'])
  return Task(
    spec.name,
    spec.kind,
    spec.weight,
    pos_weight=spec.pos_weight,
    focal_gamma=spec.focal_gamma,
    focal_alpha=spec.focal_alpha,
    label_std=std,
  )


def check_tasks(tasks) -> None:
  """One-line ValueError on duplicate names or a head that is no own head."""
  names = [t.name for t in tasks]
  if len(set(names)) != len(names):
    raise ConfigError(f'task names {names} repeat, expected unique names')
  own = {t.name for t in tasks if t.head is None}
  for t in tasks:
    if t.head is not None and t.head not in own:
      raise ConfigError(
        f'task {t.name!r}: head {t.head!r} is not a task with its own '
        f'output, expected one of {sorted(own)}'
      )
  if not any(t.train for t in tasks):
    raise ConfigError(f'tasks {names}: none is trained, expected at least one')


def num_heads(tasks) -> int:
  """The number of model outputs: tasks scored on their own output."""
  return sum(t.head is None for t in tasks)


def head_rows(tasks) -> tuple[int, ...]:
  """For each task, the row of the model's logits [heads, B] it is scored on."""
  check_tasks(tasks)
  own = [t.name for t in tasks if t.head is None]
  return tuple(own.index(t.head or t.name) for t in tasks)


def train_rows(tasks) -> tuple[int, ...]:
  """The indices of the trained tasks, in task order."""
  return tuple(i for i, t in enumerate(tasks) if t.train)


def trained(tasks) -> tuple:
  """The trained tasks, in task order."""
  return tuple(tasks[i] for i in train_rows(tasks))
