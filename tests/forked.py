"""`mtl-train` started in the background as a fork of tests/cli.py's
forkserver, for the tests that signal or kill a run mid-way.

A fork of the server is a process of its own, like `python -m
mtl.shell.main`, with the same argv, environment, working directory and exit
code (tests/cli.py's `Fork`), so SIGKILL and SIGTERM reach a real process;
it only skips the ~4 s of importing JAX, Flax, Optax, Orbax, TFDS and the
trainer again. Its stderr goes to a file, read when it has ended.

A run can be held at a known step until the test signals it (`hold_at`), so
that the signal never arrives after the run has ended, whatever the speed
of the machine.
"""

import pathlib
import shutil
import tempfile
import time

from tests import cli

# Run in the process before `mtl-train` (cli.run's `patch`): wraps mtl's own
# stop check, `PreemptionGuard.should_stop`, which the training loop asks
# after each dispatch that does not end an epoch and after each epoch. At
# its {call}th call the run touches {marker} and waits there until a signal
# arrives (SIGTERM and SIGINT set `requested`; SIGKILL ends the process),
# then asks the real check. So it stops where it would have stopped had the
# signal arrived during that call's dispatch; saves it started go on in the
# background meanwhile.
HOLD = """
import pathlib, time
from mtl.shell import preemption

should_stop, calls = preemption.PreemptionGuard.should_stop, []

def held(guard):
  calls.append(None)
  if len(calls) == {call}:
    pathlib.Path({marker!r}).touch()
    while not guard.requested:
      time.sleep(0.01)
  return should_stop(guard)

preemption.PreemptionGuard.should_stop = held
"""


def start(
  args, env: dict, *, hold_at: int | None = None, timeout: float = 240
) -> cli.Fork:
  """`mtl-train *args` with `env`, started in the background.

  hold_at: if given, the run holds at its `hold_at`th stop check (HOLD)
    until a signal arrives, and this returns once it holds there (an
    AssertionError if it ended first, or did not get there in `timeout` s).
  """
  # The server imported JAX, TFDS and tqdm with this process's settings: a
  # run must share them (tests/cli.py runs any other as a plain subprocess).
  cli._context()
  assert cli._import_time_env(env) == cli._server['import_env'], (
    'import-time settings (JAX_*, TQDM_*, TFDS_RETRY_*) differ from the server'
  )
  if hold_at is None:
    return cli.Fork('mtl.shell.main', args, env)
  marker = pathlib.Path(tempfile.mkdtemp()) / 'held'
  patch = HOLD.format(call=hold_at, marker=str(marker))
  fork = cli.Fork('mtl.shell.main', args, env, patch=patch)
  deadline = time.time() + timeout
  try:
    while not marker.exists():
      assert fork.poll() is None, fork.stderr()[-3000:]
      assert time.time() < deadline, f'not at stop check {hold_at} in time'
      time.sleep(0.02)
  except BaseException:
    fork.close()
    raise
  finally:
    shutil.rmtree(marker.parent)
  return fork
