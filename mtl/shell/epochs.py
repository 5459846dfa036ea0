"""Running the train steps of an epoch, in any input mode (shell code).

`device`: the split lives on the device and `steps_per_dispatch` steps run
in one `lax.scan`; `host`: numpy batches, one jitted (or data-parallel) step
per dispatch, each process taking its own rows of every global batch;
`stream`: the same batches as `host`, read from the split's row file on
disk by a grain iterator (mtl/data/streaming.py) instead of from memory.

What every run shares, a single one or a population (mtl.shell.engines):
how many steps a dispatch runs (`dispatch_steps`), an epoch's dispatches
(`plan`) and a compiled program per dispatch size (`CompiledPerSize`).
They read the engine's typed settings (mtl/shell/settings.py).
"""

import jax
import numpy as np

from mtl.core import train_step
from mtl.data import pipeline, streaming
from mtl.errors import CheckpointError
from mtl.shell.settings import EngineSettings


def dispatch_steps(settings: EngineSettings, *, data_parallel: bool) -> int:
  """Train steps a dispatch runs: `steps_per_dispatch` where they scan
  (device mode; stream mode scans k streamed batches as device mode scans
  its own), else one (host mode, and a data-parallel step)."""
  mode = settings.input_mode
  scans = mode == 'device' or (mode == 'stream' and not data_parallel)
  return settings.steps_per_dispatch if scans else 1


def plan(steps: int, k: int, start: int = 0) -> list[tuple[int, int]]:
  """(first batch, number of batches) of each dispatch of an epoch of
  `steps` batches from batch `start`, `k` at a time (the last may be
  fewer)."""
  return [(b, min(k, steps - b)) for b in range(start, steps, k)]


class CompiledPerSize:
  """`make(k)` jitted (the state donated) once per dispatch size k: the
  epoch's last dispatch may run fewer steps than the others."""

  def __init__(self, make):
    self._make = make
    self._compiled = {}

  def __call__(self, k: int):
    if k not in self._compiled:
      self._compiled[k] = jax.jit(self._make(k), donate_argnums=0)
    return self._compiled[k]


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
    self,
    settings: EngineSettings,
    step_fn,
    train_split,
    data_key,
    parallel_step=None,
    rows: streaming.RowFile | None = None,
  ):
    self.mode = settings.input_mode
    self.batch_size = settings.batch_size
    self.k = dispatch_steps(settings, data_parallel=parallel_step is not None)
    self.host_split = train_split
    self.num_rows = train_split['labels'].shape[1]
    self.data_key = data_key
    self.rows = rows  # Stream mode: the training split's row file.
    if rows is not None:
      self.num_rows = rows.num_rows
    self._epoch, self._perm, self._it, self._resume = None, None, None, None
    self._next = 0
    self._scanned = CompiledPerSize(
      lambda k: train_step.make_scanned_steps(
        step_fn, batch_size=self.batch_size, num_steps=k
      )
    )
    self._parallel = parallel_step
    if parallel_step is not None:
      self._host_step = parallel_step
    elif self.mode == 'device':
      self.device_split = jax.device_put(train_split)
    else:
      self._host_step = jax.jit(step_fn, donate_argnums=0)

  def permutation(self, epoch: int):
    perm = pipeline.epoch_permutation(self.data_key, epoch, self.num_rows)
    if self.mode == 'stream':
      self._close()
      self._epoch, self._perm = epoch, np.asarray(perm)
      return self._perm
    return np.asarray(perm) if self.mode == 'host' else perm

  def _close(self):
    if self._it is not None and hasattr(self._it, 'close'):
      self._it.close()
    self._it = None

  def data_state(self, epoch: int, batch: int) -> dict | None:
    """The stream's position for a checkpoint taken at (epoch, batch):
    {'epoch', 'iterator': grain's iterator state}; None in memory."""
    if self.mode != 'stream':
      return None
    if self._it is not None and self._epoch == epoch:
      state = self._it.get_state()
    else:  # At an epoch's end: the next epoch's first batch.
      state = {'next_index': batch}
    return {'epoch': epoch, 'iterator': state}

  def restore_data_state(self, data: dict | None):
    """Resumes the stream where a checkpoint's `data_state` left it."""
    self._resume = data

  def _batch(self, first_batch: int):
    """Batch `first_batch` of the epoch's stream (the iterator's next one)."""
    if self._it is not None and self._next != first_batch:
      self._close()
    self._next = first_batch + 1
    if self._it is None:
      state = {'next_index': first_batch}
      if self._resume is not None and self._resume['epoch'] == self._epoch:
        state = dict(self._resume['iterator'])
        if state.get('next_index') != first_batch:
          raise CheckpointError(
            f'the checkpoint of epoch {self._epoch} batch {first_batch} '
            f'holds a data iterator at {state}, expected next_index '
            f'{first_batch}'
          )
      self._resume = None
      self._it = streaming.epoch_iterator(
        self.rows,
        self._perm,
        self.batch_size,
        share=process_rows if self._parallel is not None else lambda r: r,
        state=state,
      )
    return next(self._it)

  def first_batch(self, perm, batch_size: int):
    """The first `batch_size` rows of the epoch's order (diagnostics)."""
    rows = np.asarray(perm[:batch_size])
    if self.mode == 'stream':
      return self.rows.take(rows)
    return pipeline.take_rows(self.host_split, rows)

  def run(self, state, perm, first_batch: int, k: int):
    """Runs batches first_batch..first_batch+k-1; metrics are [k, ...]."""
    if self.mode == 'stream' and self._parallel is None:
      # k streamed batches in a row, scanned as device mode scans its own.
      batches = [self._batch(first_batch + i) for i in range(k)]
      data = {
        key: np.concatenate([b[key] for b in batches], 0 if i < 2 else 1)
        for i, key in enumerate(('dense', 'sparse', 'labels', 'mask'))
      }
      order = np.arange(k * self.batch_size, dtype=np.int32)
      return self._scanned(k)(state, data, order, 0)
    if self.mode in ('host', 'stream'):
      if self.mode == 'stream':
        batch = self._batch(first_batch)
      else:
        rows = perm[first_batch * self.batch_size :][: self.batch_size]
        if self._parallel is not None:
          rows = process_rows(rows)
        batch = pipeline.take_rows(self.host_split, rows)
      state, m = self._host_step(state, batch)
      return state, jax.tree.map(lambda x: x[None], to_local(m))
    return self._scanned(k)(state, self.device_split, perm, first_batch)
