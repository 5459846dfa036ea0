"""The training loop: config -> data, model, step -> workdir (shell code).

Only this module reads a ConfigDict; it unpacks it into keyword arguments of
the pure builders, so a wrong key fails at construction with the key's name.
"""

import difflib
import logging
import pathlib
import time

import jax
import ml_collections
import numpy as np
import tqdm

from mtl import checkpoint, optim, preemption, train_state, train_step
from mtl import metrics as metrics_lib
from mtl.architectures import ARCHITECTURES
from mtl.data import DATASETS, pipeline
from mtl.model import make_model
from mtl.weighting import WEIGHTINGS
from mtl.writers import Writers, truncate_metrics, write_json

INPUT_MODES = ('device', 'host')
# Dispatches queued without waiting on a result. Emulated multi-device CPU
# backends deadlock with ~32-64 queued steps (DESIGN §4); waiting on a tiny
# result every few dispatches costs nothing and keeps the queue bounded.
MAX_INFLIGHT_DISPATCHES = 8


def _choose(kind: str, name: str, options) -> None:
  if name not in options:
    close = difflib.get_close_matches(name, list(options), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ''
    raise ValueError(
      f'unknown {kind} {name!r}: expected one of '
      f'{", ".join(sorted(options))}{hint}'
    )


def check_names(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any data is read, on an unknown name in the config."""
  _choose('dataset', config.dataset_name, DATASETS)
  _choose('model', config.model_name, ARCHITECTURES)
  _choose('weighting', config.weighting_name, WEIGHTINGS)
  _choose('input_mode', config.input_mode, INPUT_MODES)


def load_dataset(config: ml_collections.ConfigDict):
  _choose('dataset', config.dataset_name, DATASETS)
  return DATASETS[config.dataset_name](**config.dataset.to_dict())


def make_weighting(config: ml_collections.ConfigDict):
  _choose('weighting', config.weighting_name, WEIGHTINGS)
  kwargs = config.weighting.get(config.weighting_name)
  kwargs = {} if kwargs is None else kwargs.to_dict()
  return WEIGHTINGS[config.weighting_name](**kwargs)


def build(config: ml_collections.ConfigDict, dataset, total_steps: int):
  """Model, optimizer and weighting method of a config, for a dataset."""
  _choose('input_mode', config.input_mode, INPUT_MODES)
  model = make_model(
    config.model_name,
    config.model.to_dict(),
    num_tasks=dataset.num_tasks,
    vocab_sizes=tuple(dataset.vocab_sizes),
    embed_dim=config.embedding.dim,
    tower_hidden=tuple(config.towers.hidden),
    tower_dropout=config.towers.dropout,
  )
  tx = optim.make_optimizer(
    **config.optimizer.to_dict(), total_steps=total_steps
  )
  weighting = make_weighting(config)
  weighting.init(dataset.num_tasks)  # Validates per-task lengths up front.
  return model, tx, weighting


def _check_finite(chunk_metrics, tasks, first_step: int) -> None:
  losses = np.asarray(jax.device_get(chunk_metrics['loss']))
  bad = ~np.isfinite(losses)
  if bad.any():
    k, t = np.argwhere(bad)[0]
    raise FloatingPointError(
      f'non-finite training loss {losses[k, t]} for task '
      f'{tasks[t].name!r} at step {first_step + k + 1}'
    )


class Preempted(Exception):
  """SIGTERM arrived; the state was saved at `step` (exit code 143)."""

  def __init__(self, step: int):
    super().__init__(
      f'preempted at step {step}: checkpoint saved; rerun the same command '
      'to resume'
    )
    self.step = step


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
  raise Preempted(int(state.step))


class EpochRunner:
  """Runs the train steps of an epoch in either input mode."""

  def __init__(self, config, step_fn, train_split, data_key):
    self.mode = config.input_mode
    self.batch_size = config.batch_size
    self.k = config.steps_per_dispatch if self.mode == 'device' else 1
    if self.k < 1:
      raise ValueError(
        f'steps_per_dispatch is {self.k}, expected a positive int'
      )
    self.host_split = train_split
    self.num_rows = train_split['labels'].shape[1]
    self.data_key = data_key
    self._compiled = {}
    self._step_fn = step_fn
    if self.mode == 'device':
      self.device_split = jax.device_put(train_split)
    else:
      self._host_step = jax.jit(step_fn, donate_argnums=0)

  def _scanned(self, k):
    if k not in self._compiled:
      run = train_step.make_scanned_steps(
        self._step_fn, batch_size=self.batch_size, num_steps=k
      )
      self._compiled[k] = jax.jit(run, donate_argnums=0)
    return self._compiled[k]

  def permutation(self, epoch: int):
    perm = pipeline.epoch_permutation(self.data_key, epoch, self.num_rows)
    return np.asarray(perm) if self.mode == 'host' else perm

  def plan(self, steps: int, start: int = 0):
    """(first batch, number of batches) of each dispatch of an epoch."""
    return [(b, min(self.k, steps - b)) for b in range(start, steps, self.k)]

  def run(self, state, perm, first_batch: int, k: int):
    """Runs batches first_batch..first_batch+k-1; metrics are [k, ...]."""
    if self.mode == 'host':
      rows = perm[first_batch * self.batch_size :][: self.batch_size]
      state, m = self._host_step(
        state, pipeline.take_rows(self.host_split, rows)
      )
      return state, jax.tree.map(lambda x: x[None], m)
    return self._scanned(k)(state, self.device_split, perm, first_batch)


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
  train_split = dataset.splits['train']
  spe = pipeline.steps_per_epoch(dataset.num_rows('train'), config.batch_size)
  if config.num_epochs < 1:
    raise ValueError(f'num_epochs is {config.num_epochs}, expected >= 1')
  model, tx, weighting = build(config, dataset, spe * config.num_epochs)

  init_key, data_key = jax.random.split(jax.random.key(config.seed))
  example = pipeline.take_rows(train_split, np.arange(2))
  state = train_state.init_train_state(
    model,
    tx,
    weighting,
    train_step.features_of(example),
    num_tasks=len(tasks),
    key=init_key,
  )
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  step_fn = train_step.make_train_step(
    model, tx, weighting, tasks, steps_per_epoch=spe
  )
  trainer = EpochRunner(config, step_fn, train_split, data_key)
  eval_run = jax.jit(
    train_step.make_scanned_eval(
      train_step.make_eval_step(model, tasks, num_bins=config.num_auc_bins),
      batch_size=config.eval_batch_size,
    )
  )
  eval_data = {
    split: jax.device_put(
      pipeline.pad_split(dataset.splits[split], config.eval_batch_size)
    )
    for split in ('validation', 'test')
  }

  ckpt = checkpoint.Checkpointer(
    workdir / 'checkpoints',
    max_to_keep=config.checkpoint.max_to_keep,
    save_every_steps=1,  # This loop decides when; see _due().
    async_save=config.checkpoint.async_save,
  )
  best_ckpt = checkpoint.Checkpointer(
    workdir / 'checkpoints_best', max_to_keep=1, save_every_steps=1
  )
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
  last_log = step

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
        step += k
        inflight += 1
        bar.update(k)
        if step // config.log_every_steps > last_log // config.log_every_steps:
          last_log = step
          _check_finite(m, tasks, step - k)
          scalars = metrics_lib.summarize_train(m, tasks)
          bar.set_postfix(
            {
              n.split('/')[-1]: f'{v:.4f}'
              for n, v in scalars.items()
              if n.startswith('train/loss/')
            }
          )
          scalars['train/epoch'] = epoch
          if writers:
            writers.write(step, scalars)
          inflight = 0
        elif inflight >= MAX_INFLIGHT_DISPATCHES:
          jax.block_until_ready(m)
          inflight = 0
        if first_batch + k == spe:
          break  # Epoch end: evaluate before saving, below.
        if step // every > (step - k) // every:
          _check_finite(m, tasks, step - k)
          ckpt.save(state, meta=position(epoch, first_batch + k), force=True)
        if guard.should_stop():
          _preempt(ckpt, state, position(epoch, first_batch + k), writers)
      jax.block_until_ready(state.step)
      _check_finite(m, tasks, step - k)
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
          best_ckpt.save(state, meta=position(epoch + 1, 0), force=True)
      if step // every > (step - k) // every or last:
        ckpt.save(state, meta=position(epoch + 1, 0), force=True)
      if guard.should_stop():
        _preempt(ckpt, state, position(epoch + 1, 0), writers)
  bar.close()
  ckpt.close()

  params = state.params
  selected_epoch = config.num_epochs
  if config.select_best and best['epoch'] is not None:
    best_ckpt.wait()
    restored = best_ckpt.restore_latest(jax.eval_shape(lambda: state))
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
