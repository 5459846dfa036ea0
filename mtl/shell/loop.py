"""The training loop: config -> data, model, step -> workdir (shell code).

`mtl.shell.build` turns the config into the dataset, model, optimizer and
weighting method, `mtl.shell.epochs` runs an epoch's steps; this module owns the
workdir:
checkpoints and resumption, evaluation and best-epoch selection, metrics and
results.
"""

import logging
import pathlib
import time

import jax
import ml_collections
import numpy as np
import tqdm

from mtl.core import diagnostics, parallel, train_state, train_step
from mtl.core import metrics as metrics_lib
from mtl.core import tasks as tasks_lib
from mtl.data import pipeline
from mtl.shell import checkpoint, preemption
from mtl.shell.build import build, check_names, load_dataset, parallel_devices
from mtl.shell.epochs import EpochRunner, process_rows, to_local
from mtl.shell.finite import FiniteGuard
from mtl.shell.writers import Writers, truncate_metrics, write_json

# Dispatches queued without waiting on a result. Emulated multi-device CPU
# backends deadlock with ~32-64 queued steps (DESIGN §4); waiting on a tiny
# result every few dispatches costs nothing and keeps the queue bounded.
MAX_INFLIGHT_DISPATCHES = 8


def _resume(config, ckpt, state):
  """The workdir's latest good checkpoint, else init_from, else `state`."""
  abstract = jax.eval_shape(lambda: state)
  restored = ckpt.restore_latest(abstract)
  if restored is not None:
    logging.info('resuming from step %d', int(restored[0].step))
    return restored
  if config.init_from:
    params, step = checkpoint.restore_params(
      pathlib.Path(config.init_from) / 'checkpoints', abstract.params
    )
    logging.info('params from %s step %d', config.init_from, step)
    return state._replace(params=params), {}
  return state, {}


def _preempt(ckpt, state, meta, writers):
  ckpt.save(state, meta=meta, force=True)
  ckpt.close()
  if writers:
    writers.close()
  raise preemption.Preempted(int(state.step))


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: pathlib.Path
) -> dict:
  """Trains, evaluates, and writes config.json, metrics.jsonl, results.json."""
  workdir = pathlib.Path(workdir)
  chief = jax.process_index() == 0
  t_start = time.time()
  check_names(config)
  dataset = load_dataset(config)
  tasks = dataset.tasks
  train_tasks = tasks_lib.trained(tasks)  # What the step trains and logs.
  train_split = dataset.splits['train']
  spe = pipeline.steps_per_epoch(dataset.num_rows('train'), config.batch_size)
  if config.num_epochs < 1:
    raise ValueError(f'num_epochs is {config.num_epochs}, expected >= 1')
  if (
    config.init_from
    and not (pathlib.Path(config.init_from) / 'checkpoints').is_dir()
  ):
    raise FileNotFoundError(
      f'init_from {config.init_from} holds no checkpoints/ directory, '
      'expected the workdir of an earlier run'
    )
  model, tx, weighting = build(config, dataset, spe * config.num_epochs)

  init_key, data_key = jax.random.split(jax.random.key(config.seed))
  example = pipeline.take_rows(train_split, np.arange(2))
  state = train_state.init_train_state(
    model,
    tx,
    weighting,
    train_step.features_of(example),
    num_tasks=len(train_tasks),
    key=init_key,
  )
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  devices = parallel_devices(config)
  axis = None if devices is None else parallel.AXIS_NAME
  step_fn = train_step.make_train_step(
    model,
    tx,
    weighting,
    tasks,
    steps_per_epoch=spe,
    axis_name=axis,
    skip_nonfinite=config.skip_nonfinite,
  )
  eval_step = train_step.make_eval_step(
    model, tasks, num_bins=config.num_auc_bins, axis_name=axis
  )
  padded = {
    split: pipeline.pad_split(dataset.splits[split], config.eval_batch_size)
    for split in ('validation', 'test')
  }
  if devices is None:
    parallel_step = None
    eval_run = jax.jit(
      train_step.make_scanned_eval(eval_step, batch_size=config.eval_batch_size)
    )
    eval_data = {k: jax.device_put(v) for k, v in padded.items()}
  else:
    parallel_step = parallel.make_parallel_train_step(
      step_fn, backend=config.parallel.backend, devices=devices
    )
    eval_parallel = parallel.make_parallel_eval_step(
      train_step.make_scanned_eval(
        eval_step, batch_size=config.eval_batch_size // len(devices)
      ),
      backend=config.parallel.backend,
      devices=devices,
    )
    # Each process places its contiguous share of the padded split.
    eval_data = {
      k: eval_parallel.put_batch(
        pipeline.take_rows(v, process_rows(np.arange(v['labels'].shape[1])))
      )
      for k, v in padded.items()
    }

    def eval_run(params, placed):
      return to_local(eval_parallel.on_placed(params, placed))

  trainer = EpochRunner(config, step_fn, train_split, data_key, parallel_step)

  def globalize(state):
    # pmap returns each process's copy on its own devices; orbax saves
    # global arrays, one replicated array over every process's devices.
    return state if parallel_step is None else parallel_step.put_state(state)

  diag_every = config.diagnostics_every_steps
  if diag_every < 0:
    raise ValueError(
      f'diagnostics_every_steps is {diag_every}, expected >= 0 (0: off)'
    )
  diag_fn = jax.jit(diagnostics.make_diagnostics(model, tasks))

  ckpt = checkpoint.Checkpointer(
    workdir / 'checkpoints',
    max_to_keep=config.checkpoint.max_to_keep,
    save_every_steps=1,  # This loop decides when; see _due().
    async_save=config.checkpoint.async_save,
  )
  best_ckpt = checkpoint.Checkpointer(
    workdir / 'checkpoints_best',
    max_to_keep=1,
    save_every_steps=1,
    # orbax names its cross-process barriers by step: two managers saving
    # the same step asynchronously collide (measured: "Barrier
    # _async_write_complete.16 is already ongoing"). The best-epoch save is
    # rare; with several processes it is synchronous.
    async_save=jax.process_count() == 1,
  )
  abstract = jax.eval_shape(lambda: state)  # Single-device, unplaced.
  state, meta = _resume(config, ckpt, state)
  start_step = int(state.step)
  best = meta.get('best', {'score': None, 'epoch': None})
  every = config.checkpoint.every_steps or spe
  if every < 0:
    raise ValueError(f'checkpoint.every_steps is {every}, expected >= 0')

  writers = None
  if chief:
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / 'config.json', config.to_dict())
    truncate_metrics(workdir / 'metrics.jsonl', after_step=start_step)
    writers = Writers(
      workdir, config=config.to_dict(), wandb_cfg=config.wandb.to_dict()
    )
  total_steps = spe * config.num_epochs
  bar = tqdm.tqdm(
    total=total_steps,
    initial=min(start_step, total_steps),
    disable=not (chief and config.progress_bar),
    unit='step',
    dynamic_ncols=True,
  )
  step, inflight, train_time, timed_steps = start_step, 0, 0.0, 0
  last_log = last_diag = step
  finite = FiniteGuard(
    train_tasks,
    skip=config.skip_nonfinite,
    max_consecutive=config.max_consecutive_nonfinite,
  )
  # Two processes of emulated CPU devices hang unless every step is waited
  # on (DESIGN §4); on one process a bounded queue is enough.
  max_inflight = 1 if jax.process_count() > 1 else MAX_INFLIGHT_DISPATCHES

  def position(epoch, batch):
    return {'epoch': epoch, 'batch': batch, 'best': dict(best)}

  guard = preemption.PreemptionGuard()
  with guard:
    for epoch in range(start_step // spe, config.num_epochs):
      t_epoch = time.time()
      timed = epoch > start_step // spe  # The first epoch here compiles.
      perm = trainer.permutation(epoch)
      first_of_epoch = step - epoch * spe
      for first_batch, k in trainer.plan(spe, first_of_epoch):
        state, m = trainer.run(state, perm, first_batch, k)
        finite.add(step, m)
        step += k
        inflight += 1
        bar.update(k)
        if step // config.log_every_steps > last_log // config.log_every_steps:
          last_log = step
          finite.check()
          scalars = metrics_lib.summarize_train(m, train_tasks)
          if config.skip_nonfinite:
            scalars['train/nonfinite_steps'] = finite.skipped
          bar.set_postfix(
            {
              n.split('/')[-1]: f'{v:.4f}'
              for n, v in scalars.items()
              if n.startswith('train/loss/')
            }
          )
          scalars['train/epoch'] = epoch
          if diag_every and step // diag_every > last_diag // diag_every:
            last_diag = step
            if chief:
              rows = np.asarray(perm[: config.batch_size])
              scalars.update(
                diagnostics.summarize(
                  diag_fn(
                    to_local(state.params),
                    pipeline.take_rows(train_split, rows),
                  ),
                  tasks,
                )
              )
          if writers:
            writers.write(step, scalars)
          inflight = 0
        elif inflight >= max_inflight:
          jax.block_until_ready(m)
          inflight = 0
        if first_batch + k == spe:
          break  # Epoch end: evaluate before saving, below.
        if step // every > (step - k) // every:
          finite.check()  # Never save a state that went non-finite.
          ckpt.save(
            globalize(state), meta=position(epoch, first_batch + k), force=True
          )
        if guard.should_stop():
          finite.check()
          _preempt(
            ckpt, globalize(state), position(epoch, first_batch + k), writers
          )
      jax.block_until_ready(state.step)
      finite.check()
      if timed:
        train_time += time.time() - t_epoch
        timed_steps += spe
      last = epoch + 1 == config.num_epochs
      if (epoch + 1) % config.eval_every_epochs == 0 or last:
        val = metrics_lib.summarize_eval(
          eval_run(state.params, eval_data['validation']), tasks, 'val'
        )
        val['val/epoch'] = epoch + 1
        if writers:
          writers.write(step, val)
        score = metrics_lib.selection_score(val, tasks, 'val')
        if config.select_best and (
          best['score'] is None or score > best['score']
        ):
          best.update(score=score, epoch=epoch + 1)
          best_ckpt.save(
            globalize(state), meta=position(epoch + 1, 0), force=True
          )
      if step // every > (step - k) // every or last:
        ckpt.save(globalize(state), meta=position(epoch + 1, 0), force=True)
      if guard.should_stop():
        _preempt(ckpt, globalize(state), position(epoch + 1, 0), writers)
  bar.close()
  ckpt.close()

  params = state.params
  selected_epoch = config.num_epochs
  if config.select_best and best['epoch'] is not None:
    best_ckpt.wait()
    restored = best_ckpt.restore_latest(abstract)
    if restored is None:
      raise FileNotFoundError(
        f'{workdir / "checkpoints_best"}: the best-epoch checkpoint '
        f'(epoch {best["epoch"]}) is missing'
      )
    params, selected_epoch = restored[0].params, best['epoch']
  best_ckpt.close()
  final = {}
  for split, prefix in (('validation', 'val'), ('test', 'test')):
    final.update(
      metrics_lib.summarize_eval(
        eval_run(params, eval_data[split]), tasks, prefix
      )
    )
  if timed_steps == 0:  # One epoch here: the number includes compilation.
    train_time, timed_steps = time.time() - t_start, max(step - start_step, 1)
  results = {
    'model_name': config.model_name,
    'dataset_name': config.dataset_name,
    'dataset': config.dataset.to_dict(),
    'weighting_name': config.weighting_name,
    'seed': config.seed,
    'tasks': [t.name for t in tasks],
    'selected_epoch': selected_epoch,
    'num_epochs': config.num_epochs,
    'steps': int(step),
    'resumed_from_step': start_step,
    'num_params': int(num_params),
    'num_devices': 1 if devices is None else len(devices),
    'num_processes': jax.process_count(),
    'parallel_backend': None if devices is None else config.parallel.backend,
    'nonfinite_steps_skipped': finite.skipped,
    'train_examples_per_s': (
      timed_steps * config.batch_size / train_time
      if step > start_step
      else None
    ),
    'wall_time_s': time.time() - t_start,
    'validation': {k: v for k, v in final.items() if k.startswith('val/')},
    'test': {k: v for k, v in final.items() if k.startswith('test/')},
  }
  if writers:
    writers.write(step, final)
    writers.summary(final)
    writers.close()
    write_json(workdir / 'results.json', results)
  logging.info('results: %s', results)
  return results
