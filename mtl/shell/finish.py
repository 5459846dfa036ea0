"""A trained run's results: the selected params evaluated (shell code).

`finish` evaluates the params of each member's selected epoch (the last
state's where none was selected) on validation and test, says why early
stopping stopped, and writes each member's results.json and final metrics
row (a population's results.json lists them all); it prints the summary and
returns what the run's results.json holds.
"""

import time

from mtl.shell import console
from mtl.shell import outputs as outputs_lib
from mtl.shell.epoch_loop import LoopTools
from mtl.shell.json_files import write_json
from mtl.shell.loop_state import LoopState
from mtl.shell.run_setup import Run


def finish(run: Run, loop: LoopState, tools: LoopTools, t_start: float):
  """Results of every member; what results.json holds (a population's:
  the members' and the speed)."""
  settings, tasks, step = run.settings.loop, run.tasks, loop.step
  selected = [
    outputs_lib.selected_epochs(loop.best, j, tasks, settings.num_epochs)
    for j in range(run.size)
  ]
  per_task = run.mode == 'per_task' and loop.best_params is not None
  final = outputs_lib.final_lines(
    run.engine,
    loop.state.params if loop.best_params is None else loop.best_params,
    tasks,
    selected[0] if per_task else None,
  )
  stopped = outputs_lib.stopped_early(
    loop.best, settings.patience, step, run.spe, run.total
  )
  if stopped and run.chief:
    console.say(stopped['why'])
  train_time, timed_steps = loop.train_time, loop.timed_steps
  if timed_steps == 0:  # One epoch here: the number includes compilation.
    train_time = time.time() - t_start
    timed_steps = max(step - loop.start_step, 1)
  per_s = (
    run.size * timed_steps * settings.batch_size / train_time
    if step > loop.start_step
    else None
  )
  results = [
    outputs_lib.member_result(
      run.settings,
      m,
      tasks,
      final[j],
      selected_epoch=selected[j],
      stopped_early=stopped,
      steps=int(step),
      resumed_from_step=loop.start_step,
      num_params=int(run.num_params),
      population_size=run.size if run.is_population else None,
      engine=run.engine,
      nonfinite_skipped=tools.guards[j].skipped,
      examples_per_s=per_s,
      wall_time_s=time.time() - t_start,
    )
    for j, m in enumerate(run.members)
  ]
  tools.outputs.finish(step, final, results)
  summary = results[0]
  if run.is_population:
    summary = {
      'population_size': run.size,
      'train_examples_per_s': per_s,
      'wall_time_s': time.time() - t_start,
      'members': results,
    }
    if run.chief:
      write_json(run.workdir / 'results.json', summary)
  if run.chief:
    outputs_lib.print_summary(results, run.workdir, run.is_population)
  return summary
