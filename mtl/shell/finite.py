"""Guards on the training losses: non-finite and diverging (shell code)."""

import jax
import numpy as np
from absl import logging

# The evaluation's loss of each task kind (mtl.core.metrics.summarize_eval).
VALIDATION_LOSSES = ('logloss', 'weighted_logloss', 'mse')


class NonFinite(FloatingPointError):
  """A training loss was not finite (or diverged with stop_on_divergence)."""


class Diverged(NonFinite):
  """Finite losses grew by orders of magnitude and the config says stop,
  or an evaluation found a validation loss that did (always a stop)."""


class FiniteGuard:
  """Checks every step's losses, lazily: dispatches are queued as device
  arrays and read only at check points (log, checkpoint, epoch end), so the
  error names the first bad step without a host wait per dispatch.

  With `skip` (config.skip_nonfinite) bad steps were skipped by the step
  itself; the run fails only after `max_consecutive` of them in a row.

  Divergence: a finite loss above `divergence_factor` times the task's first
  loss (the mean of the first checked dispatch) warns once per task, or
  stops the run with `Diverged` when `stop_on_divergence`. A factor of 0
  turns the check off. A healthy run's losses fall; 1000x its first value
  is a run whose optimizer blew up (e.g. Adam at lr 1e6: losses ~1e25).

  A diverged run ends like a non-finite one (`Diverged`, exit code 3),
  whatever stop_on_divergence says, when an evaluation confirms it
  (`validation`): a task's validation loss is not finite, or (factor > 0)
  it is above `divergence_factor` times the task's reference loss, the
  first checked training loss: about what the untrained model, a constant
  guess, scores (ln 2 for a binary task). A training spike that the model
  recovers from only warns; a model that evaluates orders of magnitude
  worse than knowing nothing is not trained on, selected or saved (Adam at
  lr 1e6 on census: finite losses, validation logloss 1.6e4 and AUC 0.5).
  """

  def __init__(
    self,
    tasks,
    *,
    skip: bool,
    max_consecutive: int,
    divergence_factor: float = 0.0,
    stop_on_divergence: bool = False,
  ):
    self.tasks = tasks
    self.skip = skip
    self.max_consecutive = max_consecutive
    self.factor = divergence_factor
    self.stop = stop_on_divergence
    self.pending = []
    self.skipped = 0
    self.consecutive = 0
    self.reference = None  # [T] first losses.
    self.warned = set()

  def validation(self, scalars: dict, epoch: int) -> None:
    """Raises `Diverged` if a trained task's validation loss in `scalars`
    (an evaluation's 'val/<logloss|weighted_logloss|mse>/<task>') is not
    finite or above divergence_factor times its reference loss."""
    for t, task in enumerate(self.tasks):
      for metric in VALIDATION_LOSSES:
        loss = scalars.get(f'val/{metric}/{task.name}')
        if loss is None:
          continue
        ref = None if self.reference is None else self.reference[t]
        if np.isfinite(loss) and not (
          self.factor and ref is not None and loss > self.factor * ref
        ):
          continue
        what = (
          ''
          if not np.isfinite(loss)
          else f', {loss / ref:.3g}x its first training loss {ref:.3g} '
          f'(divergence_factor={self.factor:g})'
        )
        raise Diverged(
          f'validation {metric} of task {task.name!r} is {loss:.4g} at epoch '
          f'{epoch}{what}: the run diverged; lower optimizer.learning_rate'
        )

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
          self._diverging(losses[k], first_step + k + 1)
          continue
        t = int(np.argmax(bad[k]))
        where = (
          f'non-finite training loss {losses[k, t]} for task '
          f'{self.tasks[t].name!r} at step {first_step + k + 1}'
        )
        if not self.skip:
          raise NonFinite(
            f'{where} (set skip_nonfinite=True to skip such steps instead)'
          )
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive:
          raise NonFinite(
            f'{where}: {self.consecutive} non-finite steps in a row '
            f'(max_consecutive_nonfinite={self.max_consecutive})'
          )

  def _diverging(self, losses: np.ndarray, step: int) -> None:
    if not self.factor:
      return
    if self.reference is None:
      self.reference = np.maximum(np.abs(losses), 1e-12)
      return
    ratio = np.abs(losses) / self.reference
    for t in np.flatnonzero(ratio > self.factor):
      name = self.tasks[t].name
      message = (
        f'training loss of task {name!r} is {losses[t]:.3g} at step {step}, '
        f'{ratio[t]:.3g}x its first value {self.reference[t]:.3g} '
        f'(divergence_factor={self.factor:g}): the run is diverging; lower '
        'optimizer.learning_rate'
      )
      if self.stop:
        raise Diverged(message)
      if name not in self.warned:
        self.warned.add(name)
        logging.warning('%s', message)
