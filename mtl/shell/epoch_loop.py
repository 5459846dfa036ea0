"""The training loop's phases: an epoch's steps, its evaluation (shell code).

`open_loop` opens what the loop writes and watches (`LoopTools`: the
outputs, a finite guard per member, the progress bar, the profiled dispatch,
the SIGTERM/SIGINT guard) once the resume point is known. `train_epoch`
runs an epoch's dispatches (`mtl.shell.epochs.plan`), writing metrics rows
(and diagnostics), checkpoints mid-epoch and stopping on a signal;
`evaluate_and_select` evaluates the validation split and keeps the best
epoch's params. `check_finite`, `save` and `stop` are the loop's checks,
saves and preempted exit. When each happens is `mtl.shell.loop_state.due`,
at the intervals of the run's typed `LoopSettings` (`run.settings.loop`).
"""

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from mtl.core import diagnostics
from mtl.shell import console, epochs, preemption, profiling, selection
from mtl.shell import outputs as outputs_lib
from mtl.shell.finite import FiniteGuard, NonFinite
from mtl.shell.loop_state import LoopState, due
from mtl.shell.run_setup import Run

# Dispatches queued without waiting on a result. Emulated multi-device CPU
# backends deadlock with ~32-64 queued steps (docs/ARCHITECTURE.md);
# waiting on a tiny result every few dispatches costs nothing.
MAX_INFLIGHT_DISPATCHES = 8


@dataclasses.dataclass
class LoopTools:
  """What the loop writes to, checks with and listens to."""

  outputs: outputs_lib.Outputs
  guards: list  # A FiniteGuard a member.
  bar: Any  # console.progress_bar
  diagnose: Any  # jitted diagnostics.make_diagnostics
  dispatch: profiling.Profiled  # engine.run, traced if profile.steps asks.
  preemption: preemption.PreemptionGuard
  max_inflight: int


def open_loop(run: Run, loop: LoopState) -> LoopTools:
  """The loop's tools at its resume point (metrics past it truncated)."""
  settings = run.settings.loop
  outputs = outputs_lib.Outputs(
    run.settings.record,
    run.workdir,
    run.members,
    member_configs=run.member_configs,
    start_step=loop.start_step,
  )
  guards = [
    FiniteGuard(
      run.train_tasks,
      skip=settings.skip_nonfinite,
      max_consecutive=settings.max_consecutive_nonfinite,
      divergence_factor=settings.divergence_factor,
      stop_on_divergence=settings.stop_on_divergence,
    )
    for _ in range(run.size)
  ]
  diagnose = jax.jit(diagnostics.make_diagnostics(run.model, run.tasks))
  bar = console.progress_bar(
    total=run.total,
    initial=loop.start_step,
    enabled=run.chief and settings.progress_bar,
    desc=f'{run.size} members' if run.is_population else None,
  )
  # Two processes of emulated CPU devices hang unless every step is waited
  # on; on one process a bounded queue is enough.
  max_inflight = 1 if jax.process_count() > 1 else MAX_INFLIGHT_DISPATCHES
  guard = preemption.PreemptionGuard()
  dispatch = profiling.Profiled(
    run.engine.run,
    settings.profile_steps if run.chief else None,
    run.workdir,
    loop.step,
    run.total,
  )
  return LoopTools(
    outputs, guards, bar, diagnose, dispatch, guard, max_inflight
  )


def train_epoch(run: Run, loop: LoopState, tools: LoopTools, epoch: int):
  """Trains the rest of `epoch`; returns whether its last dispatch passed a
  checkpoint interval (the epoch's end saves then, after evaluating)."""
  settings, engine = run.settings.loop, run.engine
  t_epoch = time.time()
  timed = epoch > loop.start_step // run.spe  # The first epoch compiles.
  every = settings.checkpoint_every_steps or run.spe
  perms = engine.permutation(epoch)
  start = loop.step - epoch * run.spe
  for first, k in epochs.plan(run.spe, engine.dispatch_steps, start):
    loop.state, m = tools.dispatch(loop.state, perms, first, k)
    loop.pending.append((loop.step, m['loss']))  # Read at check points.
    loop.step += k
    loop.inflight += 1
    tools.bar.update(k)
    if due(loop.step, loop.last_log, settings.log_every_steps):
      _log(run, loop, tools, epoch, m, perms)
    elif loop.inflight >= tools.max_inflight:
      jax.block_until_ready(m)
      loop.inflight = 0
    if first + k == run.spe:
      break  # Epoch end: evaluate before saving.
    if due(loop.step, loop.step - k, every):
      check_finite(run, loop, tools)  # Never save a non-finite state.
      save(run, loop, epoch, first + k)
    if tools.preemption.should_stop():
      check_finite(run, loop, tools)
      stop(run, loop, tools, epoch, first + k)
  jax.block_until_ready(loop.state.step)
  check_finite(run, loop, tools)
  if timed:
    loop.train_time += time.time() - t_epoch
    loop.timed_steps += run.spe
  return due(loop.step, loop.step - k, every)


def _log(run: Run, loop, tools, epoch: int, m, perms) -> None:
  """A metrics row a member at `loop.step` (`m`: the dispatch's metrics),
  with diagnostics when they are due."""
  settings, engine = run.settings.loop, run.engine
  loop.last_log = loop.step
  check_finite(run, loop, tools)
  m = jax.device_get(m)
  rows = []
  for j, g in enumerate(tools.guards):
    scalars = outputs_lib.member_scalars(m, j, run.train_tasks)
    if settings.skip_nonfinite:
      scalars['train/nonfinite_steps'] = g.skipped
    scalars['train/epoch'] = epoch
    rows.append(scalars)
  tools.bar.set_postfix(
    {
      n.split('/')[-1]: f'{v:.4f}'
      for n, v in rows[0].items()
      if n.startswith('train/loss/')
    }
  )
  if due(loop.step, loop.last_diag, settings.diagnostics_every_steps):
    loop.last_diag = loop.step
    if run.chief:
      for j, scalars in enumerate(rows):
        scalars.update(
          diagnostics.summarize(
            tools.diagnose(
              engine.member_params(loop.state.params, j),
              engine.first_batch(perms, j, settings.batch_size),
            ),
            run.tasks,
          )
        )
  tools.outputs.write(loop.step, rows)
  loop.inflight = 0


def evaluate_and_select(run: Run, loop, tools, epoch: int, *, last: bool):
  """Evaluates the validation split after `epoch` epochs; a member's (or
  task's) params that improve become its best, saved to checkpoints_best/;
  sets `loop.stopped` once early stopping's patience has run out."""
  tasks, settings = run.tasks, run.settings.loop
  val = outputs_lib.eval_lines(
    run.engine, loop.state.params, 'validation', tasks, 'val'
  )
  check_finite(run, loop, tools, val, epoch)
  for scalars in val:
    scalars['val/epoch'] = epoch
  improved = selection.update(
    loop.best,
    [selection.scores(s, tasks, 'val', run.mode) for s in val],
    epoch,
  )
  tools.outputs.write(loop.step, val)
  if run.chief:
    console.say(outputs_lib.eval_line(epoch, settings.num_epochs, val, 'val'))
  if np.any(improved):
    loop.best_params = run.engine.select(
      improved, loop.state.params, loop.best_params, copy=not last
    )
    save(run, loop, epoch, 0, best=True)
  loop.stopped = selection.exhausted(loop.best, settings.patience)


def check_finite(run: Run, loop, tools, val=None, epoch=None) -> None:
  """Raises NonFinite (naming the member and the checkpoint kept) if a
  member's pending losses, or its validation metrics `val` after `epoch`
  epochs, went non-finite or diverged."""
  for first, loss in loop.pending:
    loss = np.asarray(jax.device_get(loss))  # [k, K, T]
    for j, g in enumerate(tools.guards):
      g.add(first, {'loss': loss[:, j]})
  loop.pending.clear()
  for j, (m, g) in enumerate(zip(run.members, tools.guards, strict=True)):
    try:
      g.check()
      if val is not None:  # A diverged evaluation ends the run.
        g.validation(val[j], epoch)
    except NonFinite as e:
      who = f'member {m["name"]}: ' if run.is_population else ''
      saved = run.ckpt.all_steps()
      kept = (
        f'the checkpoint of step {saved[-1]} is kept'
        if saved
        else 'no checkpoint was written yet'
      )
      raise type(e)(f'{who}{e}; {kept}') from None


def save(run: Run, loop, epoch: int, batch: int, *, best: bool = False):
  """Saves the state at (epoch, batch) to checkpoints/, or with the best
  params to checkpoints_best/; the meta holds the position, the best
  epochs and the stream's position."""
  meta = {'epoch': epoch, 'batch': batch, 'best': loop.best}
  meta.update(getattr(run.engine, 'layout_meta', dict)())  # Split tables.
  data = run.engine.data_state(epoch, batch)
  if data is not None:
    meta['data'] = data
  state = loop.state
  if best:
    state = state._replace(params=loop.best_params)
  to = run.best_ckpt if best else run.ckpt
  to.save(run.engine.globalize(state), meta=meta, force=True)


def stop(run: Run, loop, tools, epoch: int, batch: int):
  """Saves at (epoch, batch), closes the checkpointers and outputs, and
  raises Preempted (the CLI exits 143 or 130)."""
  save(run, loop, epoch, batch)
  run.ckpt.close()
  run.best_ckpt.close()
  tools.outputs.close()
  raise preemption.Preempted(loop.step, tools.preemption.signum)
