"""The trainer: config -> dataset, model, step -> workdir (shell code).

`train(config, workdir)` runs every run, a single one or a population of K
members trained in one compiled program (`config.population`); a single run
is a population of one, so every setting means the same for both. The
config is read once, into typed settings (`mtl.shell.settings`); the
config itself only goes on to the builders. The engine
(`mtl.shell.engines`) steps the members; `_train` is
the loop in named phases, each in its own module: set up
(`run_setup.set_up`: dataset, model, engine, checkpointers), restore
(`run_setup.restore`: the resume point), the epoch loop
(`epoch_loop.train_epoch`: dispatches, metrics rows, checkpoints,
preemption), evaluate and select (`epoch_loop.evaluate_and_select`: the
best epoch, early stopping) and finish (`finish.finish`: the selected
params' results and the summary). When the loop logs, saves or evaluates
is one rule, `loop_state.due`.

Workdir of a single run: config.json, metrics.jsonl, results.json,
checkpoints/ (resumed by rerunning), checkpoints_best/ (the best epoch).
A population has the same checkpoints (of the stacked state), one directory
per member under members/<name>/ with its own config.json, metrics.jsonl,
results.json and W&B run, and a results.json listing them all.
"""

import time

from mtl.core.architectures import ARCHITECTURES
from mtl.shell import epoch_loop, finish, keywords, run_setup, validate
from mtl.shell import settings as settings_lib
from mtl.shell import workdir as workdir_lib
from mtl.shell.loop_state import due


def train(config, workdir) -> dict:
  """Trains every member of the config (a ConfigDict); returns what
  results.json holds.

  Before any data is read: the names in the config are checked, the model's
  keywords resolved, and the workdir checked, locked and compared with the
  run it already holds (`mtl.shell.workdir`); the lock is held until the
  results are written.
  """
  t_start = time.time()
  validate.check_config(config)  # Types and ranges of every key.
  keywords.resolve_model(config, ARCHITECTURES)
  settings = settings_lib.from_config(config)  # The loop's reads, once.
  with workdir_lib.open_workdir(
    workdir,
    settings_lib.record_of(config),
    allow_changes=settings.allow_changes,
    record=False,
  ) as wd:
    return _train(config, settings, wd, t_start)


def _train(config, settings, wd, t_start: float) -> dict:
  """Set up, restore, the epoch loop (train, evaluate and select, save),
  finish."""
  run = run_setup.set_up(config, settings, wd)
  loop = run_setup.restore(run, wd)
  tools = epoch_loop.open_loop(run, loop)
  first_epoch = loop.start_step // run.spe
  num_epochs = settings.loop.num_epochs
  # An early-stopped run (loop.stopped on restore) trains no more.
  last_epoch = 0 if loop.stopped else num_epochs
  with tools.preemption:
    for epoch in range(first_epoch, last_epoch):
      save_due = epoch_loop.train_epoch(run, loop, tools, epoch)
      last = epoch + 1 == num_epochs
      if due(epoch + 1, epoch, settings.loop.eval_every_epochs) or last:
        epoch_loop.evaluate_and_select(run, loop, tools, epoch + 1, last=last)
      if save_due or last or loop.stopped:
        epoch_loop.save(run, loop, epoch + 1, 0)
      if loop.stopped:
        break
      if tools.preemption.should_stop():
        epoch_loop.stop(run, loop, tools, epoch + 1, 0)
  tools.bar.close()
  run.ckpt.close()
  run.best_ckpt.close()
  return finish.finish(run, loop, tools, t_start)
