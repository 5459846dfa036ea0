"""Trains a population of K members in one compiled program (shell code).

`config.population` lists what differs between members (`members_of`); the
members share the model, the data on the device and one `jit`-compiled
program (`mtl.core.population`). The workdir holds the stacked state's
checkpoints (`checkpoints/`, resumed like a single run's), the best epoch of
every member (`checkpoints_best/`), one directory per member under
`members/<name>/` with its config.json, metrics.jsonl, results.json and W&B
run (one run per member, grouped), and results.json listing them all.
"""

import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from mtl.core import metrics as metrics_lib
from mtl.core import population, train_step
from mtl.core import tasks as tasks_lib
from mtl.core.weighting import WEIGHTINGS
from mtl.data import pipeline
from mtl.shell import build as build_lib
from mtl.shell import checkpoint, preemption
from mtl.shell import finite as finite_lib
from mtl.shell import members as population_members
from mtl.shell.writers import Writers, truncate_metrics, write_json


def _member_writers(config, workdir, m, start_step):
  d = workdir / 'members' / m['name']
  d.mkdir(parents=True, exist_ok=True)
  cfg = population_members.member_config(config, m)
  write_json(d / 'config.json', cfg)
  truncate_metrics(d / 'metrics.jsonl', after_step=start_step)
  wandb_cfg = config.wandb.to_dict()
  wandb_cfg['group'] = wandb_cfg.get('group') or workdir.name
  wandb_cfg['name'] = '/'.join(filter(None, [wandb_cfg.get('name'), m['name']]))
  wandb_cfg['tags'] = tuple(wandb_cfg.get('tags') or ()) + ('population',)
  return d, Writers(d, config=cfg, wandb_cfg=wandb_cfg)


def train_population(
  config: ml_collections.ConfigDict, workdir: pathlib.Path
) -> dict:
  """Trains every member; writes the workdir described in the docstring."""
  workdir = pathlib.Path(workdir)
  t_start = time.time()
  build_lib.check_names(config)
  population_members.check_supported(config)
  dataset = build_lib.load_dataset(config)
  tasks = dataset.tasks
  train_tasks = tasks_lib.trained(tasks)  # What the step trains and logs.
  num_tasks = len(train_tasks)
  members = population_members.members_of(config, num_tasks)
  size = len(members)
  split = dataset.splits['train']
  spe = pipeline.steps_per_epoch(dataset.num_rows('train'), config.batch_size)
  if config.num_epochs < 1:
    raise ValueError(f'num_epochs is {config.num_epochs}, expected >= 1')
  model, tx, _ = build_lib.build(config, dataset, spe * config.num_epochs)
  name = config.weighting_name
  methods = []
  for m in members:
    try:
      methods.append(WEIGHTINGS[name](**m['weighting']))
      methods[-1].init(num_tasks)
    except (TypeError, ValueError) as e:
      raise ValueError(f'population member {m["name"]}: {e}') from None
  keys = [jax.random.split(jax.random.key(m['seed'])) for m in members]
  example = train_step.features_of(pipeline.take_rows(split, np.arange(2)))
  state = population.init_population(
    model,
    tx,
    methods,
    example,
    num_tasks=num_tasks,
    init_keys=[k[0] for k in keys],
  )
  hparams = {
    'task_weights': jnp.asarray([m['task_weights'] for m in members]),
    'lr_scale': jnp.asarray(
      [m['learning_rate'] / config.optimizer.learning_rate for m in members]
    ),
    'member': jnp.arange(size, dtype=jnp.int32),
  }
  step_fn = train_step.make_train_step(
    model,
    tx,
    population.switch_methods(methods),
    tasks,
    steps_per_epoch=spe,
    skip_nonfinite=config.skip_nonfinite,
  )
  runs = {}

  def run(k):
    if k not in runs:
      runs[k] = jax.jit(
        population.make_population_steps(
          step_fn, batch_size=config.batch_size, num_steps=k
        ),
        donate_argnums=0,
      )
    return runs[k]

  eval_step = train_step.make_eval_step(
    model, tasks, num_bins=config.num_auc_bins
  )
  eval_run = jax.jit(
    population.make_population_eval(
      train_step.make_scanned_eval(eval_step, batch_size=config.eval_batch_size)
    )
  )
  eval_data = {
    s: jax.device_put(
      pipeline.pad_split(dataset.splits[s], config.eval_batch_size)
    )
    for s in ('validation', 'test')
  }
  data = jax.device_put(split)
  data_keys = [k[1] for k in keys]

  ckpt = checkpoint.Checkpointer(
    workdir / 'checkpoints',
    max_to_keep=config.checkpoint.max_to_keep,
    save_every_steps=1,
    async_save=config.checkpoint.async_save,
  )
  best_ckpt = checkpoint.Checkpointer(
    workdir / 'checkpoints_best', max_to_keep=1, save_every_steps=1
  )
  abstract = jax.eval_shape(lambda: state)
  restored = ckpt.restore_latest(abstract)
  meta = {}
  if restored is not None:
    state, meta = restored
  start_step = int(state.step[0])
  best = meta.get('best', {'score': [None] * size, 'epoch': [None] * size})
  best_params = state.params
  if any(e is not None for e in best['epoch']):
    saved = best_ckpt.restore_latest(abstract)
    if saved is None:
      raise FileNotFoundError(
        f'{workdir / "checkpoints_best"}: the best-epoch checkpoint of the '
        'population is missing'
      )
    best_params = saved[0].params
  best_params = jax.tree.map(jnp.copy, best_params)  # Not donated with state.
  every = config.checkpoint.every_steps or spe

  write_json(workdir / 'config.json', config.to_dict())
  member_dirs, writers = zip(
    *(_member_writers(config, workdir, m, start_step) for m in members),
    strict=True,
  )
  guards = [
    finite_lib.FiniteGuard(
      train_tasks,
      skip=config.skip_nonfinite,
      max_consecutive=config.max_consecutive_nonfinite,
    )
    for _ in members
  ]

  pending = []

  def check_finite():
    for first, loss in pending:
      loss = np.asarray(jax.device_get(loss))  # [k, K, T]
      for j, g in enumerate(guards):
        g.add(first, {'loss': loss[:, j]})
    pending.clear()
    for m, g in zip(members, guards, strict=True):
      try:
        g.check()
      except finite_lib.NonFinite as e:
        raise finite_lib.NonFinite(f'member {m["name"]}: {e}') from None

  def position(epoch, batch):
    return {'epoch': epoch, 'batch': batch, 'best': best}

  def close_all():
    ckpt.close()
    best_ckpt.close()
    for w in writers:
      w.close()

  total = spe * config.num_epochs
  bar = tqdm.tqdm(
    total=total,
    initial=min(start_step, total),
    disable=not config.progress_bar,
    unit='step',
    desc=f'{size} members',
  )
  step, last_log, train_time, timed_steps = start_step, start_step, 0.0, 0
  guard = preemption.PreemptionGuard()
  with guard:
    for epoch in range(start_step // spe, config.num_epochs):
      t_epoch = time.time()
      timed = epoch > start_step // spe  # The first epoch here compiles.
      perms = jnp.stack(
        [
          pipeline.epoch_permutation(k, epoch, split['labels'].shape[1])
          for k in data_keys
        ]
      )
      plan = _plan(config.steps_per_dispatch, spe, step - epoch * spe)
      for first, k in plan:
        state, m = run(k)(state, hparams, data, perms, first)
        pending.append((step, m['loss']))  # Read only at check points.
        step += k
        bar.update(k)
        if step // config.log_every_steps > last_log // config.log_every_steps:
          last_log = step
          check_finite()
          m = jax.device_get(m)
          for j, w in enumerate(writers):
            scalars = metrics_lib.summarize_train(
              jax.tree.map(lambda x, j=j: x[:, j], m), train_tasks
            )
            scalars['train/epoch'] = epoch
            w.write(step, scalars)
        if first + k < spe and step // every > (step - k) // every:
          check_finite()
          ckpt.save(state, meta=position(epoch, first + k), force=True)
        if guard.should_stop():
          check_finite()
          ckpt.save(state, meta=position(epoch, first + k), force=True)
          close_all()
          raise preemption.Preempted(step)
      jax.block_until_ready(state.step)
      check_finite()
      if timed:
        train_time += time.time() - t_epoch
        timed_steps += spe
      last = epoch + 1 == config.num_epochs
      if (epoch + 1) % config.eval_every_epochs == 0 or last:
        counts = jax.device_get(eval_run(state.params, eval_data['validation']))
        improved = np.zeros(size, bool)
        for j, w in enumerate(writers):
          val = metrics_lib.summarize_eval(
            jax.tree.map(lambda x, j=j: x[j], counts), tasks, 'val'
          )
          val['val/epoch'] = epoch + 1
          w.write(step, val)
          score = metrics_lib.selection_score(val, tasks, 'val')
          if config.select_best and (
            best['score'][j] is None or score > best['score'][j]
          ):
            best['score'][j], best['epoch'][j] = score, epoch + 1
            improved[j] = True
        if improved.any():
          best_params = _where_members(improved, state.params, best_params)
          best_ckpt.save(
            state._replace(params=best_params),
            meta=position(epoch + 1, 0),
            force=True,
          )
      ckpt.save(state, meta=position(epoch + 1, 0), force=True)
      if guard.should_stop():
        close_all()
        raise preemption.Preempted(step)
  bar.close()
  ckpt.close()
  best_ckpt.close()

  final_params = best_params if config.select_best else state.params
  final = {
    s: jax.device_get(eval_run(final_params, eval_data[s]))
    for s in ('validation', 'test')
  }
  if timed_steps == 0:  # One epoch here: the number includes compilation.
    train_time, timed_steps = time.time() - t_start, max(step - start_step, 1)
  per_s = (
    size * timed_steps * config.batch_size / train_time
    if step > start_step
    else None
  )
  results = []
  for j, (m, d, w) in enumerate(
    zip(members, member_dirs, writers, strict=True)
  ):
    out = {}
    for s, prefix in (('validation', 'val'), ('test', 'test')):
      out.update(
        metrics_lib.summarize_eval(
          jax.tree.map(lambda x, j=j: x[j], final[s]), tasks, prefix
        )
      )
    r = {
      'model_name': config.model_name,
      'dataset_name': config.dataset_name,
      'dataset': config.dataset.to_dict(),
      'weighting_name': name,
      'weighting': m['weighting'],
      'member': m['name'],
      'seed': m['seed'],
      'learning_rate': m['learning_rate'],
      'task_weights': list(m['task_weights']),
      'tasks': [t.name for t in tasks],
      'selected_epoch': best['epoch'][j] or config.num_epochs,
      'num_epochs': config.num_epochs,
      'steps': int(step),
      'resumed_from_step': start_step,
      'population_size': size,
      'validation': {k: v for k, v in out.items() if k.startswith('val/')},
      'test': {k: v for k, v in out.items() if k.startswith('test/')},
    }
    w.write(step, out)
    w.summary(out)
    w.close()
    write_json(d / 'results.json', r)
    results.append(r)
  summary = {
    'population_size': size,
    'train_examples_per_s': per_s,
    'wall_time_s': time.time() - t_start,
    'members': results,
  }
  write_json(workdir / 'results.json', summary)
  logging.info('population of %d: %.0f examples/s', size, per_s or 0)
  return summary


def _plan(k: int, steps: int, start: int):
  if k < 1:
    raise ValueError(f'steps_per_dispatch is {k}, expected a positive int')
  return [(b, min(k, steps - b)) for b in range(start, steps, k)]


def _where_members(mask, new, old):
  """Member k of `new` where mask[k], else of `old` (stacked trees)."""
  mask = jnp.asarray(mask)
  return jax.tree.map(
    lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
    new,
    old,
  )
