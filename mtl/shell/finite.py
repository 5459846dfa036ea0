"""The guard against non-finite training losses (shell code)."""

import jax
import numpy as np


class NonFinite(FloatingPointError):
  """A training loss was not finite; the last good checkpoint is kept."""


class FiniteGuard:
  """Checks every step's losses, lazily: dispatches are queued as device
  arrays and read only at check points (log, checkpoint, epoch end), so the
  error names the first bad step without a host wait per dispatch.

  With `skip` (config.skip_nonfinite) bad steps were skipped by the step
  itself; the run fails only after `max_consecutive` of them in a row.
  """

  def __init__(self, tasks, *, skip: bool, max_consecutive: int):
    self.tasks = tasks
    self.skip = skip
    self.max_consecutive = max_consecutive
    self.pending = []
    self.skipped = 0
    self.consecutive = 0

  def add(self, first_step: int, chunk_metrics) -> None:
    self.pending.append((first_step, chunk_metrics))

  def check(self) -> None:
    pending, self.pending = self.pending, []
    for first_step, m in pending:
      losses = np.asarray(jax.device_get(m['loss']))
      bad = ~np.isfinite(losses)
      for k in range(losses.shape[0]):
        if not bad[k].any():
          self.consecutive = 0
          continue
        t = int(np.argmax(bad[k]))
        where = (
          f'non-finite training loss {losses[k, t]} for task '
          f'{self.tasks[t].name!r} at step {first_step + k + 1}'
        )
        if not self.skip:
          raise NonFinite(
            f'{where}; the last good checkpoint is kept (set '
            'skip_nonfinite=True to skip such steps instead)'
          )
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive:
          raise NonFinite(
            f'{where}: {self.consecutive} non-finite steps in a row '
            f'(max_consecutive_nonfinite={self.max_consecutive})'
          )
