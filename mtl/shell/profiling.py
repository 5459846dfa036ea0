"""A `jax.profiler` trace of chosen training steps (shell code).

The config's `profile.steps = 'A:B'` traces the training steps that take
the global step counter (the TrainState's `step`, the number of steps
done) from A to B; '' (the default) traces nothing. The trainer dispatches
`steps_per_dispatch` steps per compiled call, and a trace can only start
or stop between calls, so the traced range is rounded outwards to dispatch
boundaries: it starts before the call that runs step A and stops after the
call that brings the counter to B or past it (each epoch's last call may
be shorter), and a trace that training outlives stops after the last
step (an early-stopped run's at exit). The console line says which steps
were traced.

The trace goes to `<workdir>/profile/plugins/profile/<time>/`: the XSpace
(`<host>.xplane.pb`, what TensorBoard's profile plugin and
`jax.profiler.ProfileData.from_file` read) and a Perfetto trace
(`perfetto_trace.json.gz`, for https://ui.perfetto.dev). Only process 0
traces. The device is waited on before the trace starts and before it
stops, so the trace holds the traced steps' work and only theirs; with
A = 0 it also holds the step's compilation.
"""

import atexit
import pathlib

import jax

from mtl.errors import ConfigError
from mtl.shell import console

PROFILE_DIR = 'profile'


def parse_steps(value) -> tuple[int, int] | None:
  """'A:B' -> (A, B); '' or None -> None (no trace).

  Raises:
    ConfigError: (one line, naming profile.steps) anything but 'A:B' with
      integers 0 <= A < B.
  """
  if not value:
    return None
  a, sep, b = str(value).partition(':')
  if sep and a.strip().isdigit() and b.strip().isdigit() and int(a) < int(b):
    return int(a), int(b)
  raise ConfigError(
    f"profile.steps is {value!r}, expected 'A:B' with integers 0 <= A < B "
    "(the global steps to trace), or '' (off)"
  )


class Profiled:
  """`run(state, perms, first, k)` (an engine's dispatch of k steps),
  traced over the steps `steps` (profile.steps' (A, B), `parse_steps`);
  `close()` ends a trace that training ended first (called at exit).

  Args:
    run: the engine's dispatch.
    steps: the global steps (A, B) to trace; None: no trace (profile.steps
      is '', or this process is not process 0).
    workdir: the run's directory; the trace goes to its profile/.
    step: the global step counter before the first dispatch (the resumed
      step).
    last: training's last step (steps per epoch x num_epochs).
  """

  def __init__(self, run, steps, workdir, step: int, last: int):
    self._run = run
    self._range = steps
    self._dir = pathlib.Path(workdir) / PROFILE_DIR
    self._step = step
    self._last = last
    self._first = None  # The first traced step, while tracing.

  def __call__(self, state, perms, first: int, k: int):
    step = self._step
    if self._range and self._first is None:
      a, b = self._range
      if step < b and step + k > a:
        jax.block_until_ready(state)
        jax.profiler.start_trace(self._dir, create_perfetto_trace=True)
        self._first = step
        atexit.register(self.close)  # Early stopping may end training.
    state, metrics = self._run(state, perms, first, k)
    self._step = step + k
    end = min(self._range[1], self._last) if self._range else 0
    if self._first is not None and self._step >= end:
      jax.block_until_ready((state, metrics))
      self._stop()
    return state, metrics

  def close(self) -> None:
    """Stops a trace still running (training ended before step B)."""
    if self._first is not None:
      self._stop()

  def _stop(self) -> None:
    atexit.unregister(self.close)
    jax.profiler.stop_trace()
    a, b = self._range
    first, last = self._first, self._step
    self._first, self._range = None, None  # One trace a run.
    runs = sorted((self._dir / 'plugins' / 'profile').glob('*/'))
    where = runs[-1] if runs else self._dir
    rounded = ''
    if last < b:
      rounded = f' (asked {a}:{b}; training ended at step {last})'
    elif (first, last) != (a, b):
      rounded = f' (asked {a}:{b}, rounded to dispatch boundaries)'
    console.say(
      f'profile of steps {first}:{last}{rounded} written to {where}: view '
      f'it with `tensorboard --logdir {self._dir}` (profile plugin: pip '
      'install tensorboard tensorboard-plugin-profile) or open '
      f'{where / "perfetto_trace.json.gz"} at https://ui.perfetto.dev'
    )
