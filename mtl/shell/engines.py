"""How a run's members step, evaluate and hand back params (shell code).

The trainer (`mtl.shell.trainer`) drives one loop for every run; an engine
hides whether the state holds one member or K stacked ones:

  `Single`      (here) one member: a plain TrainState, the jitted step on
                its input's batches (`EpochRunner`), or the data-parallel
                step over several devices and processes (`mtl.core.parallel`).
  `Population`  (mtl/shell/population_engine.py) K members stacked [K, ...]
                and vmapped in one compiled program (`mtl.core.population`),
                on device-resident data or on host batches, one device.

Both give metrics as [steps, K, ...] and evaluation counts as [K, ...], so
the trainer treats a single run as a population of one. This module also
holds what both use: the example features that shape the state and the
per-task params of `select_best='per_task'`
(`stack_select`, `per_task_abstract`, `task_params`). Engines read their
typed `EngineSettings` (mtl/shell/settings.py), never the config, and take
their data from an input of the run's mode (`mtl.shell.inputs`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from mtl.core import parallel, sharded_tables, train_state, train_step
from mtl.core.layers import embedding
from mtl.data import pipeline
from mtl.shell import inputs, sharded_restore
from mtl.shell.epochs import EpochRunner, to_local
from mtl.shell.settings import EngineSettings


def example_features(split):
  """The features of a split's first two rows: the shapes `init` traces."""
  return train_step.features_of(pipeline.take_rows(split, np.arange(2)))


def stack_select(mask, new, old):
  """Per-task params [S, ...]: slot t is `new` where mask[t], else `old`'s
  (old None: `new` in every slot). New arrays, never `new`'s own."""
  if old is None:
    return jax.tree.map(lambda x: jnp.stack([x] * len(mask)), new)
  m = jnp.asarray(mask)
  return jax.tree.map(
    lambda a, b: jnp.where(m.reshape((-1,) + (1,) * a.ndim), a[None], b),
    new,
    old,
  )


def per_task_abstract(abstract, slots: int):
  """The abstract state of a best checkpoint: per-task params (slots > 1)
  stacked [slots, ...], else as trained."""
  if slots <= 1:
    return abstract
  return abstract._replace(
    params=jax.tree.map(
      lambda x: jax.ShapeDtypeStruct((slots, *x.shape), x.dtype),
      abstract.params,
    )
  )


def task_params(stacked, t: int):
  """Slot t of per-task params stacked [S, ...]."""
  return jax.tree.map(lambda x: x[t], stacked)


class Single:
  """One member; every input mode and data-parallel backend."""

  size = 1

  def __init__(
    self,
    settings: EngineSettings,
    dataset,
    model,
    tx,
    weighting,
    *,
    spe: int,
    devices: list | None,
  ):
    """`devices`: those of a data-parallel run (build.parallel_devices),
    None for the plain jitted step."""
    tasks = dataset.tasks
    split = dataset.splits['train']
    init_key, data_key = jax.random.split(jax.random.key(settings.seed))
    features = example_features(split)
    self.devices = devices
    axis = None if self.devices is None else parallel.AXIS_NAME
    # Embedding tables split by rows over the devices (mtl/shell/sharding.py).
    self.sharded = getattr(tx, 'sharded', ())
    specs = None
    if self.sharded:
      specs = functools.partial(
        sharded_tables.specs, names=self.sharded, axis_name=axis
      )

    def init():
      state = train_state.init_train_state(
        model,
        tx,
        weighting,
        features,
        num_tasks=len([t for t in tasks if t.train]),
        key=init_key,
      )
      return state  # Split tables drawn in their blocks (model.row_blocks).

    if self.sharded:  # Each device keeps its own blocks, never a table.
      mesh = parallel.make_mesh(devices)
      shardings = jax.tree.map(
        lambda spec: NamedSharding(mesh, spec), specs(jax.eval_shape(init))
      )
      self.state = jax.jit(init, out_shardings=shardings)()
    else:
      self.state = init()
    step_fn = train_step.make_train_step(
      model,
      tx,
      weighting,
      tasks,
      steps_per_epoch=spe,
      axis_name=axis,
      skip_nonfinite=settings.skip_nonfinite,
    )
    eval_step = train_step.make_eval_step(
      model,
      tasks,
      num_bins=settings.num_auc_bins,
      axis_name=axis,
      sharded=self.sharded,
    )
    eval_batch = settings.eval_batch_size
    self._parallel = None
    if self.devices is None:
      self._eval = jax.jit(
        train_step.make_scanned_eval(eval_step, batch_size=eval_batch)
      )
      put = jax.device_put
    else:
      self._parallel = parallel.make_parallel_train_step(
        step_fn,
        backend=settings.parallel_backend,
        devices=self.devices,
        state_specs=specs,
      )
      scanned = train_step.make_scanned_eval(
        eval_step, batch_size=eval_batch // len(self.devices)
      )
      # The state slot is replicated: params and the running total.
      ev = parallel.make_parallel_eval_step(
        lambda carry, data: scanned(carry[0], data, carry[1]),
        backend=settings.parallel_backend,
        devices=self.devices,
        state_specs=specs,
      )
      self._eval = lambda params, placed, total=None: ev.on_placed(
        (params, total), placed
      )
      put = ev.put_batch  # Each process places its own share.
    tables = embedding.lookups(model.vocab_sizes, model.embed_dim)[1]
    self._num_rows = {name: rows for name, (rows, _) in tables.items()}
    data = inputs.make_input(settings, dataset, devices=self.devices, put=put)
    self._runner = EpochRunner(step_fn, data, data_key, self._parallel)
    self.num_devices = 1 if self.devices is None else len(self.devices)

  def relayout(self) -> sharded_restore.Relayout:
    """How a checkpoint of any table layout is read into this engine's."""
    mesh = None if not self.sharded else self._parallel.mesh
    return sharded_restore.Relayout(self.sharded, self._num_rows, mesh)

  def layout_meta(self) -> dict:
    """The checkpoint meta of the layout: {} when nothing is split."""
    if not self.sharded:
      return {}
    return {
      sharded_restore.META_KEY: sharded_restore.meta_of(
        self.sharded, self._num_rows, self.num_devices
      )
    }

  def permutation(self, epoch: int):
    return self._runner.permutation(epoch)

  def run(self, state, perm, first_batch: int, k: int):
    state, m = self._runner.run(state, perm, first_batch, k)
    return state, jax.tree.map(lambda x: x[:, None], m)

  @property
  def dispatch_steps(self) -> int:
    """Train steps per dispatch (steps_per_dispatch when they scan)."""
    return self._runner.k

  def data_state(self, epoch: int, batch: int):
    return self._runner.data_state(epoch, batch)

  def restore_data_state(self, data):
    self._runner.restore_data_state(data)

  def evaluate(self, params, split: str):
    """The split's counts [1, ...], part by part of the input's (chunks
    read from disk when streamed), the running total carried: the same
    sum, in the same order, as over the whole split at once."""
    total = None
    for placed in self._runner.data.eval_parts(split):
      total = self._eval(params, placed, total)
    counts = jax.device_get(to_local(total))
    return jax.tree.map(lambda x: np.asarray(x)[None], counts)

  def globalize(self, state):
    # pmap returns each process's copy on its own devices; orbax saves
    # global arrays, one replicated array over every process's devices.
    return state if self._parallel is None else self._parallel.put_state(state)

  def select(self, improved, new, old, *, copy: bool = True):
    """`new` where improved[0] (one slot per selection, [1, S]), else
    `old`; with per-task slots (S > 1) a tree stacked [S, ...], slot t of
    `new` where improved[0][t] (old None: `new` in every slot)."""
    # A copy: the state's own arrays are donated to the next step (after
    # the last epoch there is none: `copy=False` spares the model's size).
    (row,) = improved
    if not any(row):
      return old
    if len(row) > 1:
      return stack_select(row, new, old)
    return jax.tree.map(jnp.copy, new) if copy else new

  def member_params(self, params, j: int):
    del j
    return to_local(params)

  def first_batch(self, perm, j: int, batch_size: int):
    del j
    return self._runner.first_batch(perm, batch_size)
