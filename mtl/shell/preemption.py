"""SIGTERM (preemption) and SIGINT (Ctrl-C) as a flag the loop polls (shell
code): either one saves a checkpoint and exits, and the same command
resumes."""

import logging
import os
import signal

import jax
from jax.experimental import multihost_utils

# 128 + the signal: what a shell reports for a process ended by it, so a
# scheduler sees "terminated" (143, SIGTERM) or "interrupted" (130, SIGINT),
# and a requeue script can tell either from a crash. Both saved a checkpoint.
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # 143
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT  # 130
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code(signum: int) -> int:
  """The exit code of a run stopped by `signum` after saving."""
  return 128 + int(signum)


class Preempted(Exception):
  """A stop signal arrived; the state was saved at `step`.

  Attributes:
    step: the saved step.
    signum: the signal (SIGTERM: preempted, SIGINT: interrupted).
    exit_code: 128 + signum (143 or 130), what the CLI exits with.
  """

  def __init__(self, step: int, signum: int = signal.SIGTERM):
    what = 'interrupted' if signum == signal.SIGINT else 'preempted'
    super().__init__(
      f'{what} at step {step}: checkpoint saved; rerun the same command '
      'to resume'
    )
    self.step = step
    self.signum = int(signum)
    self.exit_code = exit_code(signum)


class PreemptionGuard:
  """Turns SIGTERM and SIGINT into a flag the loop polls between dispatches.

  Usage (keep the save inside the `with`, so a second signal cannot
  interrupt it):
    with PreemptionGuard() as guard:
      for ...:
        state = run(state)
        if guard.should_stop():
          ckpt.save(state, meta=..., force=True)
          ckpt.close()
          raise Preempted(step, guard.signum)  # The CLI exits e.exit_code.

  Single process: a Python handler for each of `signals` sets `requested`
  and `signum` (the first signal's); the previous handlers come back on
  exit. A further signal while the run stops (saving) is ignored, with a
  line on stderr: only SIGKILL (kill -9) aborts without saving, and orbax's
  atomic commit leaves at worst an unfinished temporary directory then.

  Multi-process (`jax.distributed` initialised): JAX's preemption service
  owns SIGTERM, so no handler is installed and `should_stop`
  asks `reached_preemption_sync_point`, so that every host stops at the same
  call. SIGINT keeps its default there (KeyboardInterrupt, no save): a
  Ctrl-C reaches the processes at different times, and a flag set on one
  host only would make the hosts disagree. Call `should_stop` equally often
  on every host, from the main thread.
  """

  def __init__(self, signals=SIGNALS):
    self.signals = tuple(signals)
    self.requested = False
    self.signum = None
    self._previous = {}
    self._calls = 0
    self._multihost = jax.distributed.is_initialized()

  def _handle(self, signum, frame):
    del frame
    if self.requested:
      # No logging: the handler may run inside a logging call.
      os.write(
        2,
        f'\n{signal.Signals(signum).name} ignored: already stopping and '
        'saving a checkpoint (kill -9 aborts without saving)\n'.encode(),
      )
      return
    self.requested = True
    self.signum = signum

  def __enter__(self):
    if not self._multihost:
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, previous in self._previous.items():
      signal.signal(s, previous)
    self._previous = {}

  def should_stop(self) -> bool:
    """True once a stop was requested (the same call on all hosts)."""
    self._calls += 1
    if self._multihost:
      if multihost_utils.reached_preemption_sync_point(self._calls):
        self.requested = True
        self.signum = self.signum or signal.SIGTERM
    if self.requested:
      name = signal.Signals(self.signum).name if self.signum else 'stop'
      logging.warning('%s requested: saving and exiting', name)
    return self.requested
