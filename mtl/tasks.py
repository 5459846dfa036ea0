"""Tasks of a multi-task problem.

The order of `tasks` is fixed for a run: row t of `labels`, `mask`, logits and
per-task losses is always task t.
"""

import dataclasses

KINDS = ('binary', 'regression')


@dataclasses.dataclass(frozen=True)
class Task:
  """One prediction task.

  Attributes:
    name: short name used in metric keys (`val/auc/<name>`).
    kind: 'binary' (BCE on logits, AUC) or 'regression' (MSE).
    weight: the task's base loss weight before any balancing method.
  """

  name: str
  kind: str = 'binary'
  weight: float = 1.0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(
        f'task {self.name!r}: kind {self.kind!r} is not one of {KINDS}'
      )
