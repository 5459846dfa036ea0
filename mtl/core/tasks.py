"""Tasks of a multi-task problem.

The order of `tasks` is fixed for a run: row t of `labels` and `mask` is
always task t. Most tasks are trained and scored on their own model output.
Two fields serve entire-space models and evaluation-only views (DESIGN §7):

- `train=False`: a metric-only task, evaluated (AUC, loss) but never in the
  training loss nor seen by a balancing method; e.g. ESMM's CVR on clicked
  impressions, which ESMM never trains directly.
- `head='<task>'`: the task is scored on another task's model output; e.g.
  the CVR prediction scored over all impressions against the true
  conversion propensity of synthetic data.

The model has one output ("head") per task whose `head` is None, in task
order (`head_rows`); the train step sees the trained tasks (`train_rows`).
"""

import dataclasses

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
  """

  name: str
  kind: str = 'binary'
  weight: float = 1.0
  train: bool = True
  head: str | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ConfigError(
        f'task {self.name!r}: kind {self.kind!r} is not one of {KINDS}'
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
