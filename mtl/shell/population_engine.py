"""K members stacked and vmapped in one program on one device (shell code).

`Population` is the engine (`mtl.shell.engines`) of `config.population`:
each member's state, weighting method, data order and bootstrap weights
(`population.bagging`) stacked [K, ...] and stepped by one vmapped,
compiled step (`mtl.core.population`), on its input (`mtl.shell.inputs`):
device-resident data (k steps scanned a dispatch) or host batches. Its
metrics are [steps, K, ...] and its evaluation counts [K, ...], as the
single run's engine gives them. It reads its typed `EngineSettings`
(mtl/shell/settings.py), not the config.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mtl.core import bagging, population, train_step
from mtl.core.weighting import WEIGHTINGS
from mtl.errors import ConfigError
from mtl.shell import epochs, inputs
from mtl.shell.engines import example_features
from mtl.shell.settings import EngineSettings


class Population:
  """K members stacked and vmapped in one program on one device."""

  def __init__(
    self, settings: EngineSettings, dataset, model, tx, members, *, spe: int
  ):
    if settings.num_devices != 1 or jax.process_count() > 1:
      raise ConfigError(
        f'parallel.num_devices is {settings.num_devices} with a '
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
        methods.append(WEIGHTINGS[settings.weighting_name](**m['weighting']))
        methods[-1].init(num_tasks)
      except (TypeError, ValueError) as e:
        raise ConfigError(f'population member {m["name"]}: {e}') from None
    keys = [jax.random.split(jax.random.key(m['seed'])) for m in members]
    self._data_keys = [k[1] for k in keys]
    self.state = population.init_population(
      model,
      tx,
      methods,
      example_features(split),
      num_tasks=num_tasks,
      init_keys=[k[0] for k in keys],
    )
    self._hparams = {
      'task_weights': jnp.asarray([m['task_weights'] for m in members]),
      'lr_scale': jnp.asarray(
        [m['learning_rate'] / settings.learning_rate for m in members]
      ),
      'member': jnp.arange(self.size, dtype=jnp.int32),
    }
    self._bags = None  # Bagging: [K, N] bootstrap counts (mtl.core.bagging).
    if settings.bagging:
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
      skip_nonfinite=settings.skip_nonfinite,
    )
    eval_step = train_step.make_eval_step(
      model, tasks, num_bins=settings.num_auc_bins
    )
    self._eval = jax.jit(
      population.make_population_eval(
        train_step.make_scanned_eval(
          eval_step, batch_size=settings.eval_batch_size
        )
      )
    )
    self._input = inputs.make_input(settings, dataset)
    self._batch = settings.batch_size
    self._scanned = epochs.CompiledPerSize(
      lambda k: population.make_population_steps(
        self._step, batch_size=self._batch, num_steps=k
      )
    )
    self._host_step = jax.jit(
      jax.vmap(self._step, in_axes=(0, 0, 0)), donate_argnums=0
    )

  def permutation(self, epoch: int):
    return self._input.permutations(self._data_keys, epoch)

  def run(self, states, perms, first_batch: int, k: int):
    if self._input.scans:
      data, order, start = self._input.scan_data(perms, first_batch, k)
      return self._scanned(k)(states, self._hparams, data, order, start)
    start = first_batch * self._batch
    batches = [self._input.batch(p, first_batch) for p in perms]
    for j, b in enumerate(batches if self._bags is not None else ()):
      b['weight'] = self._bags[j][perms[j][start : start + self._batch]]
    batch = jax.tree.map(lambda *xs: np.stack(xs), *batches)
    states, m = self._host_step(states, batch, self._hparams)
    return states, jax.tree.map(lambda x: x[None], m)

  def evaluate(self, params, split: str):
    (data,) = self._input.eval_parts(split)
    return jax.device_get(self._eval(params, data))

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
    return self._input.dispatch_steps

  def data_state(self, epoch: int, batch: int):
    return self._input.data_state(epoch, batch)

  def restore_data_state(self, data):
    self._input.restore_data_state(data)

  def first_batch(self, perms, j: int, batch_size: int):
    return self._input.sample(perms[j], batch_size)
