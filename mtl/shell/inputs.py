"""Where an epoch's training batches come from: one object per input mode
(shell code).

  `DeviceInput`  ('device') the training split on the device; a dispatch
                 scans `steps_per_dispatch` steps over it in the epoch's
                 order.
  `HostInput`    ('host') numpy batches gathered from the split in memory,
                 one step a dispatch; in a data-parallel run each process
                 takes its own rows of every global batch (`process_rows`).
  `StreamInput`  ('stream') the batches of host mode, read from the split's
                 row file by a grain iterator (mtl/data/streaming.py) and
                 scanned k at a time as device mode scans its own (one a
                 dispatch when data parallel); evaluation reads its splits'
                 row files in chunks.

`make_input` chooses one from the typed settings' `input_mode`, the one
place past the config's own checks (mtl/shell/build.py) that reads it; the
engines (mtl.shell.epochs.EpochRunner for a single
run, mtl.shell.population_engine for a population) only call the
`EpochInput` protocol. Evaluation data comes from the input as well
(`eval_parts`): the padded split in memory, placed once, or chunk by chunk
from disk.
"""

from collections.abc import Iterable
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from mtl.data import pipeline, streaming
from mtl.errors import CheckpointError
from mtl.shell.settings import EngineSettings

EVAL_SPLITS = ('validation', 'test')


class EpochInput(Protocol):
  """What an epoch needs from its input, whatever the mode."""

  num_rows: int  # The training split's rows (on disk too, when streamed).
  batch_size: int
  scans: bool  # A dispatch scans `scan_data`; else one step on `batch`.
  dispatch_steps: int  # Train steps a dispatch runs.

  def permutation(self, key, epoch: int):
    """The epoch's row order (pipeline.epoch_permutation), as this input
    reads it."""

  def permutations(self, keys, epoch: int):
    """The orders of members with data keys `keys`, stacked [K, N]."""

  def scan_data(self, perm, first_batch: int, k: int) -> tuple:
    """(data, order, start) that a scan of batches first_batch..+k-1 reads
    (train_step.make_scanned_steps: batch i takes rows
    order[(start + i) * batch_size :][: batch_size] of data)."""

  def batch(self, perm, first_batch: int) -> dict:
    """Batch `first_batch` of the epoch, this process's rows (numpy)."""

  def sample(self, perm, batch_size: int) -> dict:
    """The first `batch_size` rows of the epoch's order (diagnostics)."""

  def eval_parts(self, split: str) -> Iterable:
    """An evaluation split, padded to the eval batch, in parts placed on
    the devices: the running sum of the counts is carried from part to
    part."""

  def data_state(self, epoch: int, batch: int) -> dict | None:
    """The input's position for a checkpoint at (epoch, batch); None when
    (epoch, batch) is the whole position."""

  def restore_data_state(self, data: dict | None) -> None:
    """Resumes where a checkpoint's `data_state` left off."""


def process_rows(rows: np.ndarray) -> np.ndarray:
  """This process's contiguous share of the rows of a global batch.

  The data order is one global permutation whatever the process count, so a
  run on P processes equals a one-process run on the same devices.
  """
  p, count = jax.process_index(), jax.process_count()
  share = len(rows) // count
  return rows[p * share : (p + 1) * share]


def _whole(rows: np.ndarray) -> np.ndarray:
  return rows


def make_input(
  settings: EngineSettings, dataset, *, devices=None, put=jax.device_put
) -> EpochInput:
  """The input of `settings.input_mode` over `dataset`'s splits.

  `devices`: those of a data-parallel run (None: one device); `put` places
  an evaluation part on them (the parallel eval step's `put_batch`).
  """
  kind = {'device': DeviceInput, 'host': HostInput, 'stream': StreamInput}
  return kind[settings.input_mode](settings, dataset, devices=devices, put=put)


class _InMemory:
  """What the device and host inputs share: the splits in memory."""

  scans = False

  def __init__(self, settings: EngineSettings, dataset, *, devices, put):
    self.batch_size = settings.batch_size
    self.dispatch_steps = settings.steps_per_dispatch if self.scans else 1
    self._split = dataset.splits['train']
    self.num_rows = self._split['labels'].shape[1]
    parallel = devices is not None
    self._share = process_rows if parallel else _whole
    # The padded evaluation splits (each process's share when data
    # parallel), placed once.
    self._placed = {}
    for s in EVAL_SPLITS:
      padded = pipeline.pad_split(dataset.splits[s], settings.eval_batch_size)
      if parallel:
        n = padded['labels'].shape[1]
        padded = pipeline.take_rows(padded, process_rows(np.arange(n)))
      self._placed[s] = put(padded)

  def permutations(self, keys, epoch: int):
    return np.stack(
      [pipeline.epoch_permutation(k, epoch, self.num_rows) for k in keys]
    )

  def batch(self, perm, first_batch: int) -> dict:
    rows = perm[first_batch * self.batch_size :][: self.batch_size]
    return pipeline.take_rows(self._split, self._share(rows))

  def sample(self, perm, batch_size: int) -> dict:
    return pipeline.take_rows(self._split, np.asarray(perm[:batch_size]))

  def eval_parts(self, split: str) -> tuple:
    """The whole padded split, placed when the input was made."""
    return (self._placed[split],)

  def data_state(self, epoch: int, batch: int) -> None:
    del epoch, batch  # In memory: (epoch, batch) is the whole position.

  def restore_data_state(self, data) -> None:
    del data


class DeviceInput(_InMemory):
  """input_mode 'device': the split on the device, k steps scanned."""

  scans = True

  def __init__(self, settings: EngineSettings, dataset, *, devices, put):
    super().__init__(settings, dataset, devices=devices, put=put)
    self._on_device = jax.device_put(self._split)

  def permutation(self, key, epoch: int):
    return pipeline.epoch_permutation(key, epoch, self.num_rows)

  def permutations(self, keys, epoch: int):
    return jnp.stack(
      [pipeline.epoch_permutation(k, epoch, self.num_rows) for k in keys]
    )

  def scan_data(self, perm, first_batch: int, k: int) -> tuple:
    del k
    return self._on_device, perm, first_batch


class HostInput(_InMemory):
  """input_mode 'host': numpy batches, one step a dispatch."""

  def permutation(self, key, epoch: int):
    return np.asarray(pipeline.epoch_permutation(key, epoch, self.num_rows))

  def scan_data(self, perm, first_batch: int, k: int) -> tuple:
    raise NotImplementedError('host batches are not scanned')


class StreamInput:
  """input_mode 'stream': batches read from the split's row file by a
  grain iterator; evaluation splits read in chunks."""

  def __init__(self, settings: EngineSettings, dataset, *, devices, put):
    self.batch_size = settings.batch_size
    self._put = put
    self._parallel = devices is not None
    # k streamed batches in a row are scanned as device mode scans its own;
    # a data-parallel step takes one global batch a dispatch.
    self.scans = not self._parallel
    self.dispatch_steps = settings.steps_per_dispatch if self.scans else 1
    self._eval_batch = settings.eval_batch_size
    # This process's devices of the mesh, as process_rows shares rows.
    self._devices = 1 if devices is None else len(devices)
    per, p = self._devices // jax.process_count(), jax.process_index()
    self._local = range(p * per, (p + 1) * per)
    self._eval_rows = {s: streaming.row_file(dataset, s) for s in EVAL_SPLITS}
    self.rows = streaming.row_file(dataset)  # The training split's.
    self.num_rows = self.rows.num_rows
    self._epoch, self._perm, self._it, self._resume = None, None, None, None
    self._next = 0

  def permutation(self, key, epoch: int):
    self._close()
    perm = pipeline.epoch_permutation(key, epoch, self.num_rows)
    self._epoch, self._perm = epoch, np.asarray(perm)
    return self._perm

  def permutations(self, keys, epoch: int):
    return np.stack(
      [pipeline.epoch_permutation(k, epoch, self.num_rows) for k in keys]
    )

  def _close(self):
    if self._it is not None and hasattr(self._it, 'close'):
      self._it.close()
    self._it = None

  def data_state(self, epoch: int, batch: int) -> dict:
    """{'epoch', 'iterator': grain's iterator state} at (epoch, batch)."""
    if self._it is not None and self._epoch == epoch:
      state = self._it.get_state()
    else:  # At an epoch's end: the next epoch's first batch.
      state = {'next_index': batch}
    return {'epoch': epoch, 'iterator': state}

  def restore_data_state(self, data: dict | None) -> None:
    self._resume = data

  def batch(self, perm, first_batch: int) -> dict:
    """Batch `first_batch` of the epoch's stream (the iterator's next)."""
    del perm  # The iterator reads the order of `permutation`.
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
        share=process_rows if self._parallel else _whole,
        state=state,
      )
    return next(self._it)

  def scan_data(self, perm, first_batch: int, k: int) -> tuple:
    """k streamed batches joined, read in order (order 0..k*B-1)."""
    batches = [self.batch(perm, first_batch + i) for i in range(k)]
    data = {
      key: np.concatenate([b[key] for b in batches], 0 if i < 2 else 1)
      for i, key in enumerate(('dense', 'sparse', 'labels', 'mask'))
    }
    return data, np.arange(k * self.batch_size, dtype=np.int32), 0

  def sample(self, perm, batch_size: int) -> dict:
    return self.rows.take(np.asarray(perm[:batch_size]))

  def eval_parts(self, split: str):
    """The split's row file, chunk by chunk, each placed as it is read."""
    for chunk in streaming.eval_chunks(
      self._eval_rows[split],
      self._eval_batch,
      devices=self._devices,
      local=self._local,
    ):
      yield self._put(chunk)
