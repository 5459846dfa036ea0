"""Running the train steps of an epoch, in either input mode (shell code).

`device`: the split lives on the device and `steps_per_dispatch` steps run
in one `lax.scan`; `host`: numpy batches, one jitted (or data-parallel) step
per dispatch, each process taking its own rows of every global batch.
"""

import jax
import numpy as np

from mtl.core import train_step
from mtl.data import pipeline
from mtl.errors import ConfigError


def process_rows(rows: np.ndarray) -> np.ndarray:
  """This process's contiguous share of the rows of a global batch.

  The data order is one global permutation whatever the process count, so a
  run on P processes equals a one-process run on the same devices.
  """
  p, count = jax.process_index(), jax.process_count()
  share = len(rows) // count
  return rows[p * share : (p + 1) * share]


def to_local(tree):
  """This process's copy of replicated (global) arrays, as local arrays."""

  def leaf(x):
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
      return x.addressable_data(0)
    return x

  return jax.tree.map(leaf, tree)


class EpochRunner:
  """Runs the train steps of an epoch in either input mode.

  `parallel_step` (from `parallel.make_parallel_train_step`) replaces the
  jit-compiled host step in a data-parallel run; each process then gathers
  only its own rows of every global batch.
  """

  def __init__(
    self, config, step_fn, train_split, data_key, parallel_step=None
  ):
    self.mode = config.input_mode
    self.batch_size = config.batch_size
    self.k = config.steps_per_dispatch if self.mode == 'device' else 1
    if self.k < 1:
      raise ConfigError(
        f'steps_per_dispatch is {self.k}, expected a positive int'
      )
    self.host_split = train_split
    self.num_rows = train_split['labels'].shape[1]
    self.data_key = data_key
    self._compiled = {}
    self._step_fn = step_fn
    self._parallel = parallel_step
    if parallel_step is not None:
      self._host_step = parallel_step
    elif self.mode == 'device':
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
      if self._parallel is not None:
        rows = process_rows(rows)
      state, m = self._host_step(
        state, pipeline.take_rows(self.host_split, rows)
      )
      return state, jax.tree.map(lambda x: x[None], to_local(m))
    return self._scanned(k)(state, self.device_split, perm, first_batch)
