"""What the training loop changes as it runs, and when it acts (shell code).

`LoopState` holds the train state and the loop's counters (the step, the
best epochs so far and their params, the last log and diagnostics steps,
the dispatches in flight, the training time); `due` is the one rule by which
the loop decides when to log, compute diagnostics, save or evaluate.
"""

import dataclasses
from typing import Any


def due(now: int, since: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (since, now]: it is time to act
  once `now` passes one (every 0: never).

  The loop asks it of steps (log, diagnostics and checkpoint intervals,
  counted from the last time it acted or from the dispatch's first step)
  and of epochs (evaluation every `eval_every_epochs`).
  """
  return bool(every) and now // every > since // every


@dataclasses.dataclass
class LoopState:
  """The training loop's state between two dispatches.

  Everything a checkpoint records (`state`, `best`, the position) and the
  counters that decide when the loop logs, checks and saves.
  """

  state: Any  # TrainState, stacked [K, ...] for a population.
  start_step: int  # The step this process started (resumed) from.
  step: int  # Global steps done.
  best: dict  # mtl.shell.selection's record of the best epochs.
  # The params of the best epoch so far, a copy (the state's own arrays are
  # donated to the next step); None until an evaluation picks one, so no
  # second copy of the model is held while the first epoch trains. With
  # 'per_task' one per task, stacked [T, ...].
  best_params: Any = None
  stopped: bool = False  # Early stopping's patience ran out.
  last_log: int = 0  # The step of the last metrics row.
  last_diag: int = 0  # The step of the last diagnostics.
  inflight: int = 0  # Dispatches queued since the loop last waited.
  # (first step, loss [k, K, T]) of dispatches not yet checked for
  # non-finite losses: read only at check points.
  pending: list = dataclasses.field(default_factory=list)
  train_time: float = 0.0  # Seconds of the timed (non-compiling) epochs.
  timed_steps: int = 0
