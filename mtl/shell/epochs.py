"""Running the train steps of an epoch (shell code).

An engine's training input (`mtl.shell.inputs`: device, host or stream,
chosen once) says where the batches come from and whether a dispatch scans
several steps; `EpochRunner` compiles the steps and dispatches them for a
single run. What every run shares, a single one or a population
(mtl.shell.engines): an epoch's dispatches (`plan`), a compiled program per
dispatch size (`CompiledPerSize`) and local copies of replicated arrays
(`to_local`).
"""

import jax

from mtl.core import train_step
from mtl.shell.inputs import EpochInput


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


def to_local(tree):
  """This process's copy of replicated (global) arrays, as local arrays."""

  def leaf(x):
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
      return x.addressable_data(0)
    return x

  return jax.tree.map(leaf, tree)


class EpochRunner:
  """Runs the train steps of an epoch on its input.

  `parallel_step` (from `parallel.make_parallel_train_step`) replaces the
  jit-compiled step of unscanned dispatches in a data-parallel run (whose
  input gives each process only its own rows of every global batch).
  """

  def __init__(self, step_fn, data: EpochInput, data_key, parallel_step=None):
    self.data = data
    self.k = data.dispatch_steps
    self.data_key = data_key
    self._scanned = CompiledPerSize(
      lambda k: train_step.make_scanned_steps(
        step_fn, batch_size=data.batch_size, num_steps=k
      )
    )
    self._step = parallel_step
    if parallel_step is None:
      self._step = jax.jit(step_fn, donate_argnums=0)

  def permutation(self, epoch: int):
    return self.data.permutation(self.data_key, epoch)

  def data_state(self, epoch: int, batch: int) -> dict | None:
    """The input's position for a checkpoint taken at (epoch, batch): the
    stream's {'epoch', 'iterator'}; None in memory."""
    return self.data.data_state(epoch, batch)

  def restore_data_state(self, data: dict | None):
    """Resumes the input where a checkpoint's `data_state` left it."""
    self.data.restore_data_state(data)

  def first_batch(self, perm, batch_size: int):
    """The first `batch_size` rows of the epoch's order (diagnostics)."""
    return self.data.sample(perm, batch_size)

  def run(self, state, perm, first_batch: int, k: int):
    """Runs batches first_batch..first_batch+k-1; metrics are [k, ...]."""
    if self.data.scans:
      data, order, start = self.data.scan_data(perm, first_batch, k)
      return self._scanned(k)(state, data, order, start)
    state, m = self._step(state, self.data.batch(perm, first_batch))
    return state, jax.tree.map(lambda x: x[None], to_local(m))
