"""The trainer: config -> dataset, model, step -> workdir (shell code).

`train(config, workdir)` runs every run, a single one or a population of K
members trained in one compiled program (`config.population`); a single run
is a population of one, so every setting means the same for both. The
engine (`mtl.shell.engines`) steps the members; this module owns the rest:
setup, the epoch loop, evaluation and best-epoch selection, checkpoints and
resumption, the console, metrics and results.

Workdir of a single run: config.json, metrics.jsonl, results.json,
checkpoints/ (resumed by rerunning), checkpoints_best/ (the best epoch).
A population has the same checkpoints (of the stacked state), one directory
per member under members/<name>/ with its own config.json, metrics.jsonl,
results.json and W&B run, and a results.json listing them all.
"""

import pathlib
import time

import jax
import ml_collections
import numpy as np

from mtl.core import diagnostics
from mtl.core import tasks as tasks_lib
from mtl.core.architectures import ARCHITECTURES
from mtl.data import pipeline, streaming
from mtl.errors import WorkdirError
from mtl.shell import (
  build,
  checkpoint,
  console,
  engines,
  keywords,
  preemption,
  profiling,
  selection,
  validate,
)
from mtl.shell import members as members_lib
from mtl.shell import outputs as outputs_lib
from mtl.shell import workdir as workdir_lib
from mtl.shell.finite import FiniteGuard, NonFinite
from mtl.shell.workdir import write_json

# Dispatches queued without waiting on a result. Emulated multi-device CPU
# backends deadlock with ~32-64 queued steps (docs/ARCHITECTURE.md);
# waiting on a tiny result every few dispatches costs nothing.
MAX_INFLIGHT_DISPATCHES = 8


def _init_from(config, state, engine):
  """`state` with the params of `config.init_from`'s latest checkpoint.

  A population takes a single run's params for every member, or a
  population's of the same size member by member.
  """
  directory = pathlib.Path(config.init_from) / 'checkpoints'
  abstract = jax.eval_shape(lambda: state.params)
  if isinstance(engine, engines.Population):
    one = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), abstract
    )
    try:
      params, step = checkpoint.restore_params(directory, one)
      params = jax.tree.map(
        lambda x: np.broadcast_to(x, (engine.size, *x.shape)), params
      )
    except ValueError:
      params, step = checkpoint.restore_params(directory, abstract)
  else:
    params, step = checkpoint.restore_params(directory, abstract)
  console.say(f'params from {config.init_from} (step {step})')
  return state._replace(params=jax.tree.map(jax.numpy.asarray, params))


def train(config: ml_collections.ConfigDict, workdir) -> dict:
  """Trains every member of the config; returns what results.json holds.

  Before any data is read: the names in the config are checked, the model's
  keywords resolved, and the workdir checked, locked and compared with the
  run it already holds (`mtl.shell.workdir`); the lock is held until the
  results are written.
  """
  t_start = time.time()
  validate.check_config(config)  # Types and ranges of every key.
  keywords.resolve_model(config, ARCHITECTURES)
  with workdir_lib.open_workdir(
    workdir,
    config.to_dict(),
    allow_changes=config.workdir_allow_changes,
    record=False,
  ) as wd:
    return _train(config, wd, t_start)


def _train(config, wd, t_start: float) -> dict:
  workdir = pathlib.Path(wd.path)
  chief = jax.process_index() == 0
  is_population = members_lib.is_population(config)
  dataset = build.load_dataset(config)
  outputs_lib.write_preprocessing(config, workdir, dataset)
  tasks = dataset.tasks
  train_tasks = tasks_lib.trained(tasks)
  spe = pipeline.steps_per_epoch(
    streaming.train_rows(dataset), config.batch_size
  )
  model, tx, weighting = build.build(config, dataset, spe * config.num_epochs)
  if is_population:
    members = members_lib.members_of(config, len(train_tasks))
    engine = engines.Population(config, dataset, model, tx, members, spe=spe)
  else:
    members = [members_lib.single_member(config, len(train_tasks))]
    engine = engines.Single(config, dataset, model, tx, weighting, spe=spe)
  size = engine.size
  state = engine.state
  num_params = sum(x.size for x in jax.tree.leaves(state.params)) // (
    size if is_population else 1
  )

  ckpt = checkpoint.Checkpointer(
    workdir / 'checkpoints',
    max_to_keep=config.checkpoint.max_to_keep,
    save_every_steps=1,  # This loop decides when.
    async_save=config.checkpoint.async_save,
    remove_stale_tmp=chief,  # Under the workdir's lock.
    barrier_prefix='latest',
  )
  best_ckpt = checkpoint.Checkpointer(
    workdir / 'checkpoints_best',
    max_to_keep=1,
    save_every_steps=1,
    # orbax names its cross-process barriers by step: two managers saving
    # the same step asynchronously collide ("Barrier
    # _async_write_complete.16 is already ongoing"). The best-epoch save is
    # rare; with several processes it is synchronous.
    async_save=jax.process_count() == 1,
    remove_stale_tmp=chief,
    barrier_prefix='best',
  )
  abstract = jax.eval_shape(lambda: state)  # Unplaced.
  restored = ckpt.restore_latest(abstract)
  meta = {}
  if restored is not None:
    state, meta = restored
    engine.restore_data_state(meta.get('data'))  # Stream: the iterator.
    console.say(f'resuming from step {int(np.max(state.step))}')
  elif config.init_from:
    state = _init_from(config, state, engine)
  start_step = int(np.max(state.step))
  wd.record(config.to_dict())  # The workdir's state loads into this config.
  if start_step > spe * config.num_epochs:
    raise WorkdirError(
      f'{workdir} holds a run trained to step {start_step}, past num_epochs='
      f'{config.num_epochs} ({spe * config.num_epochs} steps): use another '
      '--workdir, or as many epochs or more'
    )
  mode = selection.mode_of(config.select_best)
  best = selection.restored(meta.get('best'), size, mode, len(tasks))
  # The params of the best epoch so far, a copy (the state's own arrays are
  # donated to the next step); None until an evaluation picks one, so no
  # second copy of the model is held while the first epoch trains. With
  # 'per_task' one per task, stacked [T, ...].
  best_params = None
  if any(e is not None for row in best['epoch'] for e in row):
    saved = best_ckpt.restore_latest(
      engines.per_task_abstract(abstract, len(best['epoch'][0]))
    )
    if saved is None:
      raise checkpoint.CheckpointError(
        f'{workdir / "checkpoints_best"}: the best-epoch checkpoint '
        f'(epoch {best["epoch"]}) is missing'
      )
    best_params = saved[0].params  # Restored: arrays of their own.
  every = config.checkpoint.every_steps or spe

  outputs = outputs_lib.Outputs(
    config,
    workdir,
    members,
    population=is_population,
    start_step=start_step,
  )
  guards = [
    FiniteGuard(
      train_tasks,
      skip=config.skip_nonfinite,
      max_consecutive=config.max_consecutive_nonfinite,
      divergence_factor=config.divergence_factor,
      stop_on_divergence=config.stop_on_divergence,
    )
    for _ in range(size)
  ]
  pending = []

  def check_finite(val=None, epoch=None):
    for first, loss in pending:
      loss = np.asarray(jax.device_get(loss))  # [k, K, T]
      for j, g in enumerate(guards):
        g.add(first, {'loss': loss[:, j]})
    pending.clear()
    for j, (m, g) in enumerate(zip(members, guards, strict=True)):
      try:
        g.check()
        if val is not None:  # A diverged evaluation ends the run.
          g.validation(val[j], epoch)
      except NonFinite as e:
        who = f'member {m["name"]}: ' if is_population else ''
        saved = ckpt.all_steps()
        kept = (
          f'the checkpoint of step {saved[-1]} is kept'
          if saved
          else 'no checkpoint was written yet'
        )
        raise type(e)(f'{who}{e}; {kept}') from None

  def position(epoch, batch):
    meta = {'epoch': epoch, 'batch': batch, 'best': best}
    data = engine.data_state(epoch, batch)
    return meta if data is None else {**meta, 'data': data}

  def save(epoch, batch, *, to=ckpt, params=None):
    s = state if params is None else state._replace(params=params)
    to.save(engine.globalize(s), meta=position(epoch, batch), force=True)

  def stop(epoch, batch):
    save(epoch, batch)
    ckpt.close()
    best_ckpt.close()
    outputs.close()
    raise preemption.Preempted(step, guard.signum)

  diag_every = config.diagnostics_every_steps
  diag_fn = jax.jit(diagnostics.make_diagnostics(model, tasks))
  total = spe * config.num_epochs
  bar = console.progress_bar(
    total=total,
    initial=start_step,
    enabled=chief and config.progress_bar,
    desc=f'{size} members' if is_population else None,
  )
  step, inflight, train_time, timed_steps = start_step, 0, 0.0, 0
  last_log = last_diag = step
  # Two processes of emulated CPU devices hang unless every step is waited
  # on; on one process a bounded queue is enough.
  max_inflight = 1 if jax.process_count() > 1 else MAX_INFLIGHT_DISPATCHES
  k_max = engine.dispatch_steps
  guard = preemption.PreemptionGuard()
  run = profiling.Profiled(engine.run, config, workdir, step, chief, spe)
  patience = config.early_stopping.patience
  stopped = selection.exhausted(best, patience)  # A rerun trains no more.
  with guard:
    for epoch in range(start_step // spe, 0 if stopped else config.num_epochs):
      t_epoch = time.time()
      timed = epoch > start_step // spe  # The first epoch here compiles.
      perms = engine.permutation(epoch)
      first_of_epoch = step - epoch * spe
      for first in range(first_of_epoch, spe, k_max):
        k = min(k_max, spe - first)
        state, m = run(state, perms, first, k)  # config.profile: traced
        pending.append((step, m['loss']))  # Read only at check points.
        step += k
        inflight += 1
        bar.update(k)
        if step // config.log_every_steps > last_log // config.log_every_steps:
          last_log = step
          check_finite()
          m = jax.device_get(m)
          rows = []
          for j, g in enumerate(guards):
            scalars = outputs_lib.member_scalars(m, j, train_tasks)
            if config.skip_nonfinite:
              scalars['train/nonfinite_steps'] = g.skipped
            scalars['train/epoch'] = epoch
            rows.append(scalars)
          bar.set_postfix(
            {
              n.split('/')[-1]: f'{v:.4f}'
              for n, v in rows[0].items()
              if n.startswith('train/loss/')
            }
          )
          if diag_every and step // diag_every > last_diag // diag_every:
            last_diag = step
            if chief:
              for j, scalars in enumerate(rows):
                scalars.update(
                  diagnostics.summarize(
                    diag_fn(
                      engine.member_params(state.params, j),
                      engine.first_batch(perms, j, config.batch_size),
                    ),
                    tasks,
                  )
                )
          outputs.write(step, rows)
          inflight = 0
        elif inflight >= max_inflight:
          jax.block_until_ready(m)
          inflight = 0
        if first + k == spe:
          break  # Epoch end: evaluate before saving, below.
        if step // every > (step - k) // every:
          check_finite()  # Never save a state that went non-finite.
          save(epoch, first + k)
        if guard.should_stop():
          check_finite()
          stop(epoch, first + k)
      jax.block_until_ready(state.step)
      check_finite()
      if timed:
        train_time += time.time() - t_epoch
        timed_steps += spe
      last = epoch + 1 == config.num_epochs
      if (epoch + 1) % config.eval_every_epochs == 0 or last:
        val = outputs_lib.eval_lines(
          engine, state.params, 'validation', tasks, 'val'
        )
        check_finite(val, epoch + 1)
        for scalars in val:
          scalars['val/epoch'] = epoch + 1
        improved = selection.update(
          best,
          [selection.scores(s, tasks, 'val', mode) for s in val],
          epoch + 1,
        )
        outputs.write(step, val)
        if chief:
          console.say(
            outputs_lib.eval_line(epoch + 1, config.num_epochs, val, 'val')
          )
        if np.any(improved):
          best_params = engine.select(
            improved, state.params, best_params, copy=not last
          )
          save(epoch + 1, 0, to=best_ckpt, params=best_params)
        stopped = selection.exhausted(best, patience)
      if step // every > (step - k) // every or last or stopped:
        save(epoch + 1, 0)
      if stopped:
        break
      if guard.should_stop():
        stop(epoch + 1, 0)
  bar.close()
  ckpt.close()
  best_ckpt.close()

  selected = [
    outputs_lib.selected_epochs(best, j, tasks, config.num_epochs)
    for j in range(size)
  ]
  final = outputs_lib.final_lines(
    engine,
    state.params if best_params is None else best_params,
    tasks,
    selected[0] if mode == 'per_task' and best_params is not None else None,
  )
  stopped = outputs_lib.stopped_early(best, patience, step, spe, total)
  if stopped and chief:
    console.say(stopped['why'])
  if timed_steps == 0:  # One epoch here: the number includes compilation.
    train_time, timed_steps = time.time() - t_start, max(step - start_step, 1)
  per_s = (
    size * timed_steps * config.batch_size / train_time
    if step > start_step
    else None
  )
  results = [
    outputs_lib.member_result(
      config,
      m,
      tasks,
      final[j],
      selected_epoch=selected[j],
      stopped_early=stopped,
      steps=int(step),
      resumed_from_step=start_step,
      num_params=int(num_params),
      population_size=size if is_population else None,
      engine=engine,
      nonfinite_skipped=guards[j].skipped,
      examples_per_s=per_s,
      wall_time_s=time.time() - t_start,
    )
    for j, m in enumerate(members)
  ]
  outputs.finish(step, final, results)
  summary = results[0]
  if is_population:
    summary = {
      'population_size': size,
      'train_examples_per_s': per_s,
      'wall_time_s': time.time() - t_start,
      'members': results,
    }
    if chief:
      write_json(workdir / 'results.json', summary)
  if chief:
    outputs_lib.print_summary(results, workdir, is_population)
  return summary
