"""Which epoch is best, and whether patience has run out (pure logic).

Model selection on the validation split (`config.select_best`):

  'first'     the epoch with the best score of the first task (the papers'
              model selection; `True` means the same)
  'last'      the last epoch (`False` means the same)
  'mean'      the epoch with the best mean over the trained tasks of each
              task's score
  'per_task'  each task its own epoch: task t is predicted by the params of
              the epoch with its best score

A task's score is higher-is-better: its AUC (binary, weighted_logistic), or
minus its mean squared error (regression). The mean skips tasks without a
finite score (no positives or no negatives in the split). An evaluation
improves a selection when its score is above the best so far (the first
evaluation always does), as the early-stopping literature's "best
validation error so far" (Prechelt, "Early Stopping - But When?", 1998).

Early stopping (`config.early_stopping.patience`, 0: off) ends training
after `patience` evaluations in a row that improved no selection (for
'per_task': no task's; a population stops when no member's did).

The record `best` is plain JSON, stored in every checkpoint's meta so that
a resumed run selects and stops as an uninterrupted one: per member the
best score and its epoch of each slot (one slot, or one per task with
'per_task'), and the evaluations since its last improvement.
"""

import math

from mtl.core import metrics as metrics_lib
from mtl.errors import ConfigError

MODES = ('first', 'last', 'mean', 'per_task')


def mode_of(select_best) -> str:
  """The mode of a `select_best` value; True and False are 'first' and
  'last' (the key was a bool once: old configs and workdirs hold them)."""
  if select_best is True:
    return 'first'
  if select_best is False:
    return 'last'
  return select_best


def task_score(summary: dict, task, prefix: str) -> float:
  """Higher is better: the task's AUC, or minus its mean squared error."""
  if task.kind in ('binary', 'weighted_logistic'):
    value = summary.get(f'{prefix}/auc/{task.name}')
  else:
    value = summary.get(f'{prefix}/mse/{task.name}')
    value = None if value is None else -value
  return math.nan if value is None else float(value)


def scores(summary: dict, tasks, prefix: str, mode: str) -> list[float]:
  """One evaluation's selection scores, one per slot of `mode`."""
  if mode == 'first':
    return [metrics_lib.selection_score(summary, tasks, prefix)]
  if mode == 'mean':
    own = [task_score(summary, t, prefix) for t in tasks if t.train]
    own = [s for s in own if math.isfinite(s)]
    return [math.fsum(own) / len(own) if own else math.nan]
  if mode == 'per_task':
    return [task_score(summary, t, prefix) for t in tasks]
  return []


def num_slots(mode: str, num_tasks: int) -> int:
  return {'first': 1, 'mean': 1, 'per_task': num_tasks}.get(mode, 0)


def initial(size: int, mode: str, num_tasks: int) -> dict:
  """The record before any evaluation."""
  slots = num_slots(mode, num_tasks)
  return {
    'mode': mode,
    'score': [[None] * slots for _ in range(size)],
    'epoch': [[None] * slots for _ in range(size)],
    'wait': [0] * size,
  }


def restored(best, size: int, mode: str, num_tasks: int) -> dict:
  """The record of a checkpoint's meta: `initial` when there is none or it
  is another mode's (a deliberate change, workdir_allow_changes); a record
  of one score per member (written before modes) is of 'first'."""
  if not best or best.get('mode', 'first') != mode:
    return initial(size, mode, num_tasks)
  out = {'mode': mode}
  for k in ('score', 'epoch'):
    v = best[k] if isinstance(best[k], list) else [best[k]]
    out[k] = [x if isinstance(x, list) else [x] for x in v]
  out['wait'] = list(best.get('wait') or [0] * size)
  return out


def update(best: dict, member_scores, epoch: int) -> list[list[bool]]:
  """Records one evaluation (per member, its slots' scores) at `epoch`, in
  place; returns per member and slot whether it improved."""
  improved = []
  for j, new in enumerate(member_scores):
    row = []
    for s, score in enumerate(new):
      old = best['score'][j][s]
      better = old is None or score > old
      if better:
        best['score'][j][s], best['epoch'][j][s] = score, epoch
      row.append(better)
    best['wait'][j] = 0 if any(row) else best['wait'][j] + 1
    improved.append(row)
  return improved


def exhausted(best: dict, patience: int) -> bool:
  """Whether every member went `patience` evaluations without improving."""
  return patience > 0 and all(w >= patience for w in best['wait'])


def selected_epochs(best: dict, j: int, fallback: int) -> list[int]:
  """Member j's selected epoch of each slot (`fallback` where none)."""
  return [e or fallback for e in best['epoch'][j]]


def check(select_best, patience: int, *, population: bool) -> None:
  """Raises a one-line ConfigError on settings that do not go together."""
  mode = mode_of(select_best)
  if patience and mode == 'last':
    raise ConfigError(
      f"early_stopping.patience is {patience} with select_best 'last', "
      "expected 0: 'last' selects no epoch by a score"
    )
  if mode == 'per_task' and population:
    raise ConfigError(
      "select_best is 'per_task' with a population, expected 'first', "
      "'last' or 'mean' (per-task params are for a single run)"
    )
