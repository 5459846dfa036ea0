"""SIGTERM (preemption) as a flag the training loop polls (shell code)."""

import logging
import signal

import jax
from jax.experimental import multihost_utils

# 128 + SIGTERM: what a shell reports for a process ended by SIGTERM, so a
# scheduler sees "terminated", and a requeue script can tell it from a crash.
PREEMPTED_EXIT_CODE = 143


class Preempted(Exception):
  """SIGTERM arrived; the state was saved at `step` (exit code 143)."""

  def __init__(self, step: int):
    super().__init__(
      f'preempted at step {step}: checkpoint saved; rerun the same command '
      'to resume'
    )
    self.step = step


class PreemptionGuard:
  """Turns SIGTERM into a flag the loop polls between dispatches.

  Usage:
    with PreemptionGuard() as guard:
      for ...:
        state = run(state)
        if guard.should_stop():
          ckpt.save(state, meta=..., force=True)
          ckpt.close()
          sys.exit(PREEMPTED_EXIT_CODE)

  Single process: a Python SIGTERM handler sets `requested`; the previous
  handler is restored on exit. Once `jax.distributed` is initialised JAX's
  preemption service owns SIGTERM (DESIGN §4), so no handler is installed
  and `should_stop` asks `reached_preemption_sync_point` instead, so that
  every host stops at the same call. Call `should_stop` equally often on
  every host, from the main thread.
  """

  def __init__(self, signum: int = signal.SIGTERM):
    self.signum = signum
    self.requested = False
    self._previous = None
    self._calls = 0
    self._multihost = jax.distributed.is_initialized()

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True  # Only a flag: no I/O inside a signal handler.

  def __enter__(self):
    if not self._multihost:
      self._previous = signal.signal(self.signum, self._handle)
    return self

  def __exit__(self, *exc):
    if not self._multihost:
      signal.signal(self.signum, self._previous)

  def should_stop(self) -> bool:
    """True once a preemption was requested (the same call on all hosts)."""
    self._calls += 1
    if self._multihost:
      if multihost_utils.reached_preemption_sync_point(self._calls):
        self.requested = True
    if self.requested:
      logging.warning('preemption requested: saving and exiting')
    return self.requested
