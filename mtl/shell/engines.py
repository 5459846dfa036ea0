"""How a run's members step, evaluate and hand back params (shell code).

The trainer (`mtl.shell.trainer`) drives one loop for every run; an engine
hides whether the state holds one member or K stacked ones:

  `Single`      one member: a plain TrainState, the jitted step on device
                or host batches (`EpochRunner`), or the data-parallel step
                over several devices and processes (`mtl.core.parallel`).
  `Population`  K members stacked [K, ...] and vmapped in one compiled
                program (`mtl.core.population`), on device-resident data or
                on host batches, one device.

Both give metrics as [steps, K, ...] and evaluation counts as [K, ...], so
the trainer treats a single run as a population of one.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mtl.core import bagging, parallel, population, train_state, train_step
from mtl.core.weighting import WEIGHTINGS
from mtl.data import pipeline, streaming
from mtl.errors import ConfigError
from mtl.shell.build import parallel_devices
from mtl.shell.epochs import EpochRunner, process_rows, to_local


def _example(split):
  return train_step.features_of(pipeline.take_rows(split, np.arange(2)))


def _pad(dataset, batch):
  return {
    s: pipeline.pad_split(dataset.splits[s], batch)
    for s in ('validation', 'test')
  }


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

  def __init__(self, config, dataset, model, tx, weighting, *, spe: int):
    tasks = dataset.tasks
    split = dataset.splits['train']
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    self.state = train_state.init_train_state(
      model,
      tx,
      weighting,
      _example(split),
      num_tasks=len([t for t in tasks if t.train]),
      key=init_key,
    )
    self.devices = parallel_devices(config)
    axis = None if self.devices is None else parallel.AXIS_NAME
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
    stream = config.input_mode == 'stream'
    # Streamed: the evaluation splits stay on disk, read in chunks.
    padded = {} if stream else _pad(dataset, config.eval_batch_size)
    self._parallel = None
    if self.devices is None:
      self._eval = jax.jit(
        train_step.make_scanned_eval(
          eval_step, batch_size=config.eval_batch_size
        )
      )
      self._eval_data = {k: jax.device_put(v) for k, v in padded.items()}
      self._put = jax.device_put
    else:
      self._parallel = parallel.make_parallel_train_step(
        step_fn, backend=config.parallel.backend, devices=self.devices
      )
      scanned = train_step.make_scanned_eval(
        eval_step, batch_size=config.eval_batch_size // len(self.devices)
      )
      # The state slot is replicated: params and the running total.
      ev = parallel.make_parallel_eval_step(
        lambda carry, data: scanned(carry[0], data, carry[1]),
        backend=config.parallel.backend,
        devices=self.devices,
      )
      # Each process places its contiguous share of the padded split.
      self._eval_data = {
        k: ev.put_batch(
          pipeline.take_rows(v, process_rows(np.arange(v['labels'].shape[1])))
        )
        for k, v in padded.items()
      }
      self._eval = lambda params, placed, total=None: ev.on_placed(
        (params, total), placed
      )
      self._put = ev.put_batch
    self._eval_rows = {}
    if stream:  # This process's devices of the mesh, as process_rows.
      d = 1 if self.devices is None else len(self.devices)
      per = d // jax.process_count()
      p = jax.process_index()
      self._eval_rows = {
        s: (streaming.row_file(dataset, s), range(p * per, (p + 1) * per))
        for s in ('validation', 'test')
      }
    self._eval_batch = config.eval_batch_size
    rows = streaming.row_file(dataset) if stream else None
    self._runner = EpochRunner(
      config, step_fn, split, data_key, self._parallel, rows=rows
    )
    self.num_devices = 1 if self.devices is None else len(self.devices)

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
    if split in self._eval_rows:
      counts = self._evaluate_streamed(params, split)
    else:
      counts = self._eval(params, self._eval_data[split])
    counts = jax.device_get(to_local(counts))
    return jax.tree.map(lambda x: np.asarray(x)[None], counts)

  def _evaluate_streamed(self, params, split: str):
    """The split's counts, chunk by chunk from its row file, the running
    total carried: the same sum, in the same order, as in memory."""
    rows, local = self._eval_rows[split]
    devices = 1 if self.devices is None else len(self.devices)
    total = None
    for chunk in streaming.eval_chunks(
      rows, self._eval_batch, devices=devices, local=local
    ):
      total = self._eval(params, self._put(chunk), total)
    return total

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


class Population:
  """K members stacked and vmapped in one program on one device."""

  def __init__(self, config, dataset, model, tx, members, *, spe: int):
    if config.parallel.num_devices != 1 or jax.process_count() > 1:
      raise ConfigError(
        f'parallel.num_devices is {config.parallel.num_devices} with a '
        f'population ({jax.process_count()} process(es)), expected 1: a '
        'population runs on one device (data parallelism is for single runs)'
      )
    self.devices, self.num_devices = None, 1
    tasks = dataset.tasks
    num_tasks = len([t for t in tasks if t.train])
    split = dataset.splits['train']
    self.size = len(members)
    methods = []
    for m in members:
      try:
        methods.append(WEIGHTINGS[config.weighting_name](**m['weighting']))
        methods[-1].init(num_tasks)
      except (TypeError, ValueError) as e:
        raise ConfigError(f'population member {m["name"]}: {e}') from None
    keys = [jax.random.split(jax.random.key(m['seed'])) for m in members]
    self._data_keys = [k[1] for k in keys]
    self.state = population.init_population(
      model,
      tx,
      methods,
      _example(split),
      num_tasks=num_tasks,
      init_keys=[k[0] for k in keys],
    )
    self._hparams = {
      'task_weights': jnp.asarray([m['task_weights'] for m in members]),
      'lr_scale': jnp.asarray(
        [m['learning_rate'] / config.optimizer.learning_rate for m in members]
      ),
      'member': jnp.arange(self.size, dtype=jnp.int32),
    }
    self._bags = None  # Bagging: [K, N] bootstrap counts (mtl.core.bagging).
    if config.population.bagging:
      n = split['labels'].shape[1]
      self._bags = np.stack(
        [
          bagging.poisson_weights(m['seed'], k, n)
          for k, m in enumerate(members)
        ]
      )
      self._hparams['example_weights'] = jnp.asarray(self._bags)
    self._step = train_step.make_train_step(
      model,
      tx,
      population.switch_methods(methods),
      tasks,
      steps_per_epoch=spe,
      skip_nonfinite=config.skip_nonfinite,
    )
    eval_step = train_step.make_eval_step(
      model, tasks, num_bins=config.num_auc_bins
    )
    self._eval = jax.jit(
      population.make_population_eval(
        train_step.make_scanned_eval(
          eval_step, batch_size=config.eval_batch_size
        )
      )
    )
    padded = _pad(dataset, config.eval_batch_size)
    self._eval_data = {k: jax.device_put(v) for k, v in padded.items()}
    self._mode, self._batch = config.input_mode, config.batch_size
    self._k = config.steps_per_dispatch if self._mode == 'device' else 1
    self._num_rows = split['labels'].shape[1]
    self._host_split = split
    self._compiled = {}
    if self._mode == 'device':
      self._data = jax.device_put(split)
    else:
      self._host_step = jax.jit(
        jax.vmap(self._step, in_axes=(0, 0, 0)), donate_argnums=0
      )

  def permutation(self, epoch: int):
    perms = [
      pipeline.epoch_permutation(k, epoch, self._num_rows)
      for k in self._data_keys
    ]
    return jnp.stack(perms) if self._mode == 'device' else np.stack(perms)

  def _scanned(self, k: int):
    if k not in self._compiled:
      self._compiled[k] = jax.jit(
        population.make_population_steps(
          self._step, batch_size=self._batch, num_steps=k
        ),
        donate_argnums=0,
      )
    return self._compiled[k]

  def run(self, states, perms, first_batch: int, k: int):
    if self._mode == 'device':
      return self._scanned(k)(
        states, self._hparams, self._data, perms, first_batch
      )
    start = first_batch * self._batch
    batches = [
      pipeline.take_rows(self._host_split, p[start : start + self._batch])
      for p in perms
    ]
    for j, b in enumerate(batches if self._bags is not None else ()):
      b['weight'] = self._bags[j][perms[j][start : start + self._batch]]
    batch = jax.tree.map(lambda *xs: np.stack(xs), *batches)
    states, m = self._host_step(states, batch, self._hparams)
    return states, jax.tree.map(lambda x: x[None], m)

  def evaluate(self, params, split: str):
    return jax.device_get(self._eval(params, self._eval_data[split]))

  def globalize(self, state):
    return state

  def select(self, improved, new, old, *, copy: bool = True):
    """Member k of `new` where improved[k] (its one slot), else of `old`
    (None: no member has a best yet, `new`: a copy unless `copy` is False,
    after the last step)."""
    if old is None:
      return jax.tree.map(jnp.copy, new) if copy else new
    mask = jnp.asarray([any(row) for row in improved])
    return jax.tree.map(
      lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
      new,
      old,
    )

  def member_params(self, params, j: int):
    return population.member(params, j)

  @property
  def dispatch_steps(self) -> int:
    return self._k

  def data_state(self, epoch: int, batch: int):
    del epoch, batch  # In memory: (epoch, batch) is the whole position.

  def restore_data_state(self, data):
    del data

  def first_batch(self, perms, j: int, batch_size: int):
    rows = np.asarray(perms[j][:batch_size])
    return pipeline.take_rows(self._host_split, rows)
