"""A run set up and its resume point found (shell code).

`set_up(config, settings, wd)` loads the dataset (writing
preprocessing.json) and builds the model, the engine of the run's members
and the two checkpointers: a `Run`, what the training loop never changes.
The config goes only to the builders (`mtl.shell.build`, `members`);
everything else reads the typed `settings`
(`mtl.shell.settings`). `restore(run, wd)` finds where the loop starts: the
latest checkpoint's state, data position and best epochs (with the best
epoch's params), else `init_from`'s params, else the engine's fresh state;
it then records the config in the workdir (`mtl.shell.workdir`).
"""

import dataclasses
import logging
import pathlib
from typing import Any

import jax
import numpy as np

from mtl.core import tasks as tasks_lib
from mtl.core.layers import embedding
from mtl.data import pipeline, streaming
from mtl.errors import WorkdirError
from mtl.shell import (
  build,
  checkpoint,
  console,
  engines,
  json_files,
  selection,
  sharding,
)
from mtl.shell import members as members_lib
from mtl.shell import outputs as outputs_lib
from mtl.shell import settings as settings_lib
from mtl.shell.loop_state import LoopState
from mtl.shell.population_engine import Population
from mtl.shell.settings import Settings


@dataclasses.dataclass
class Run:
  """What a run fixes before its first step."""

  settings: Settings
  record: dict  # The config as config.json records it.
  workdir: pathlib.Path
  chief: bool  # Process 0: the one that prints and writes shared files.
  is_population: bool
  tasks: tuple  # Every task, in order.
  train_tasks: tuple  # The trained ones.
  spe: int  # Steps per epoch.
  model: Any
  engine: Any  # engines.Single | population_engine.Population
  members: list  # One dict a member (mtl.shell.members).
  member_configs: list | None  # A population's: each member's config.json.
  num_params: int  # Of one member.
  ckpt: checkpoint.Checkpointer  # checkpoints/
  best_ckpt: checkpoint.Checkpointer  # checkpoints_best/
  mode: str  # selection.mode_of(settings.loop.select_best)

  @property
  def size(self) -> int:
    """The number of members."""
    return self.engine.size

  @property
  def total(self) -> int:
    """The run's training steps."""
    return self.spe * self.settings.loop.num_epochs


def tables_of(model) -> dict:
  """{table: (rows, dim)} of the model's embedding tables."""
  return embedding.lookups(model.vocab_sizes, model.embed_dim)[1]


def set_up(config, settings: Settings, wd) -> Run:
  """The run's dataset, model, engine and checkpointers (`config`: the
  ConfigDict `settings` were read from)."""
  loop_settings = settings.loop
  workdir = pathlib.Path(wd.path)
  chief = jax.process_index() == 0
  is_population = members_lib.is_population(config)
  dataset = build.load_dataset(config)
  outputs_lib.write_preprocessing(settings.record, workdir, dataset)
  train_tasks = tasks_lib.trained(dataset.tasks)
  spe = pipeline.steps_per_epoch(
    streaming.train_rows(dataset), loop_settings.batch_size
  )
  devices = None if is_population else build.parallel_devices(config)
  model, tx, weighting = build.build(
    config, dataset, spe * loop_settings.num_epochs, devices
  )
  layout = sharding.plan(
    build.sharding_request(config),
    tables_of(model),
    1 if devices is None else len(devices),
  )
  layout = dataclasses.replace(layout, sharded=getattr(tx, 'sharded', ()))
  sharding.check_memory(layout, devices or jax.local_devices()[:1])
  for line in layout.lines():
    console.say(line)
  if chief and layout.sharded:
    json_files.write_json(workdir / 'sharding.json', layout.record())
  if layout.sharded and loop_settings.diagnostics_every_steps:
    # Diagnostics differentiate the whole model on one device.
    logging.warning(
      'diagnostics_every_steps is off: the gradient diagnostics need whole '
      f'embedding tables, and {", ".join(layout.sharded)} are split by rows'
    )
    loop_settings = dataclasses.replace(
      loop_settings, diagnostics_every_steps=0
    )
    settings = dataclasses.replace(settings, loop=loop_settings)
  if is_population:
    members = members_lib.members_of(config, len(train_tasks))
    engine = Population(settings.engine, dataset, model, tx, members, spe=spe)
  else:
    members = [members_lib.single_member(config, len(train_tasks))]
    engine = engines.Single(
      settings.engine,
      dataset,
      model,
      tx,
      weighting,
      spe=spe,
      devices=devices,
    )
  num_params = sum(x.size for x in jax.tree.leaves(engine.state.params)) // (
    engine.size if is_population else 1
  )
  ckpt = checkpoint.Checkpointer(
    workdir / 'checkpoints',
    max_to_keep=loop_settings.max_to_keep,
    save_every_steps=1,  # The loop decides when.
    async_save=loop_settings.async_save,
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
  return Run(
    settings=settings,
    record=settings_lib.record_of(config),
    workdir=workdir,
    chief=chief,
    is_population=is_population,
    tasks=dataset.tasks,
    train_tasks=train_tasks,
    spe=spe,
    model=model,
    engine=engine,
    members=members,
    member_configs=[members_lib.member_config(config, m) for m in members]
    if is_population
    else None,
    num_params=num_params,
    ckpt=ckpt,
    best_ckpt=best_ckpt,
    mode=selection.mode_of(loop_settings.select_best),
  )


def restore(run: Run, wd) -> LoopState:
  """The loop's state at its start: resumed from the latest checkpoint (its
  stream position given back to the engine), or warm-started from
  `init_from`, or fresh; then the config is recorded in the workdir.
  """
  settings, engine = run.settings.loop, run.engine
  state = engine.state
  abstract = jax.eval_shape(lambda: state)  # Unplaced.
  relayout = None
  if hasattr(engine, 'relayout'):  # Tables split by rows, here or saved.
    relayout = engine.relayout()
    if engine.sharded:  # Read onto the devices, never whole on one.
      abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        state,
      )
  restored = run.ckpt.restore_latest(abstract, relayout)
  meta = {}
  if restored is not None:
    state, meta = restored
    engine.restore_data_state(meta.get('data'))  # Stream: the iterator.
    console.say(f'resuming from step {int(np.max(state.step))}')
  elif settings.init_from:
    state = _init_from(settings.init_from, state, engine)
  start_step = int(np.max(state.step))
  wd.record(run.record)  # The workdir's state loads into this config.
  if start_step > run.total:
    raise WorkdirError(
      f'{run.workdir} holds a run trained to step {start_step}, past '
      f'num_epochs={settings.num_epochs} ({run.total} steps): use another '
      '--workdir, or as many epochs or more'
    )
  best = selection.restored(
    meta.get('best'), run.size, run.mode, len(run.tasks)
  )
  return LoopState(
    state=state,
    start_step=start_step,
    step=start_step,
    best=best,
    best_params=_best_params(run, abstract, best),
    # A rerun of a run whose patience ran out trains no more.
    stopped=selection.exhausted(best, settings.patience),
    last_log=start_step,
    last_diag=start_step,
  )


def _best_params(run: Run, abstract, best: dict):
  """The best epoch's params from checkpoints_best/ (None: no epoch has
  been selected yet)."""
  if not any(e is not None for row in best['epoch'] for e in row):
    return None
  saved = run.best_ckpt.restore_latest(
    engines.per_task_abstract(abstract, len(best['epoch'][0]))
  )
  if saved is None:
    raise checkpoint.CheckpointError(
      f'{run.workdir / "checkpoints_best"}: the best-epoch checkpoint '
      f'(epoch {_epochs_text(best["epoch"])}) is missing'
    )
  return saved[0].params  # Restored: arrays of their own.


def _epochs_text(epochs) -> str:
  """[[2]] (one member, one task) -> '2'; per member / per task otherwise,
  e.g. [[2, 3], [1, None]] -> '2, 3; 1, -'."""
  return '; '.join(
    ', '.join('-' if e is None else str(e) for e in row) for row in epochs
  )


def _init_from(init_from: str, state, engine):
  """`state` with the params of `init_from`'s latest checkpoint.

  A population takes a single run's params for every member, or a
  population's of the same size member by member.
  """
  directory = pathlib.Path(init_from) / 'checkpoints'
  abstract = jax.eval_shape(lambda: state.params)
  if isinstance(engine, Population):
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
  console.say(f'params from {init_from} (step {step})')
  # In this run's dtypes: a float32 run's tables into a bfloat16 one
  # (embedding.dtype) are rounded to the nearest bfloat16; same dtype: as is.
  return state._replace(
    params=jax.tree.map(
      lambda p, a: jax.numpy.asarray(p, a.dtype), params, abstract
    )
  )
