"""Checkpoints of the whole TrainState plus the data position (shell code).

`Checkpointer` keeps one orbax `CheckpointManager` per directory
(`<workdir>/checkpoints/<step>/`, set up by mtl/shell/checkpoint_orbax.py),
each step holding `state` (the TrainState, written uncompressed) and `meta`
(a JSON dict: the data position and anything else the loop wants back).
Saves are asynchronous: the device-to-host copy is synchronous (orbax's
default), so the loop may donate the state right after `save` returns; the
write to disk runs in the background until `wait()`.

- Integrity: every checkpoint carries the sha256 of each saved array, taken
  from the host copy when `save` is called and stored in `meta` under
  CHECKSUM_KEY; a restore verifies them (mtl/shell/checkpoint_integrity.py),
  so flipped bytes that orbax decodes without complaint are caught. A
  checkpoint written before checksums existed restores unverified.
- Disk policy (mtl/shell/checkpoint_retention.py): nothing already saved is
  deleted by a failed run; the newest `max_to_keep` good checkpoints are
  kept, and every one `restore_latest` skipped as corrupt
  (`CorruptCheckpoint`), listed in corrupt_steps.json; a save at a step
  that already exists is skipped, never overwritten.
- A full disk under a save (ENOSPC) is one line, `DiskFull`, naming the
  newest committed checkpoint, which stays intact (orbax commits a save by
  renaming its temporary directory; mtl/shell/storage_faults.py).
- Typed PRNG keys are stored as their raw key data and wrapped again on
  restore (mtl/shell/typed_keys.py), so they round-trip bitwise.

`restore_params` reads only the params of another run's newest good
checkpoint (`init_from`).
"""

import contextlib
import logging
import pathlib
import weakref
from typing import Any

import jax
import orbax.checkpoint as ocp

from mtl.errors import CheckpointError, ConfigError
from mtl.shell import checkpoint_retention as retention
from mtl.shell import storage_faults
from mtl.shell.checkpoint_integrity import (
  check_compatible,
  checksums,
  verify_checksums,
)
from mtl.shell.checkpoint_orbax import RestoreState, SaveState, make_manager
from mtl.shell.typed_keys import from_disk, to_disk

# The meta item's key for {leaf path: "<dtype>:<sha256 hex>"}; never returned
# to the caller.
CHECKSUM_KEY = '_sha256'


class NoCheckpoint(CheckpointError, FileNotFoundError):
  """No checkpoint of a directory restores (`init_from`)."""


class CorruptCheckpoint(Exception):
  """A checkpoint step that cannot be read or fails its checksums; the
  message is the short reason."""


# The open Checkpointers of this process (closed together on a full disk).
_OPEN = weakref.WeakSet()


class Checkpointer:
  """Saves and restores `(TrainState, meta)` under one directory.

  Every process of a multi-host run constructs one and calls `save` at the
  same steps (orbax coordinates the write).
  """

  def __init__(
    self,
    directory,
    *,
    max_to_keep: int | None = 3,
    save_every_steps: int = 1000,
    async_save: bool = True,
    read_only: bool = False,
    remove_stale_tmp: bool = False,
    barrier_prefix: str | None = None,
  ):
    """Opens (creating unless read_only) the checkpoint directory.

    Args:
      directory: `<workdir>/checkpoints` (or `checkpoints_best`).
      max_to_keep: good checkpoints kept (>= 1), None: all.
      save_every_steps: `save` without `force` saves at multiples of this.
      async_save: write in the background after the host copy.
      read_only: never write (another run's directory, `init_from`).
      remove_stale_tmp: remove the half-written `*.orbax-checkpoint-tmp*`
        directories a dead writer left, with a warning naming each. Only for
        a caller that holds the workdir lock (no live writer then), on the
        process that writes the workdir.
      barrier_prefix: names this manager's cross-process barriers apart
        from another manager's of the same run (orbax names them by step).

    Raises:
      ConfigError: max_to_keep < 1 (one line).
    """
    if max_to_keep is not None and max_to_keep < 1:
      raise ConfigError(
        f'checkpoint.max_to_keep is {max_to_keep}, expected >= 1: a run '
        'must keep a checkpoint to resume from'
      )
    if save_every_steps < 1:
      raise ValueError(f'save_every_steps is {save_every_steps}, expected >= 1')
    self.directory = pathlib.Path(directory).absolute()
    self.save_every_steps = save_every_steps
    storage_faults.quiet()  # Orbax's threads' tracebacks off the console.
    _OPEN.add(self)
    self._read_only = read_only
    self._corrupt = set(retention.corrupt_steps(self.directory))
    if remove_stale_tmp and not read_only:
      retention.remove_stale_tmp(self.directory)
    self._manager = make_manager(
      self.directory,
      max_to_keep=max_to_keep,
      corrupt=self._corrupt,
      async_save=async_save,
      read_only=read_only,
      barrier_prefix=barrier_prefix,
    )

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state, *, meta: dict, force: bool = False) -> bool:
    """Starts saving `state` at `state.step` if due (or `force`).

    Args:
      state: a TrainState (any pytree with an int `step` leaf works).
      meta: JSON-ready dict stored alongside, e.g. the data position (not
        the key CHECKSUM_KEY).
      force: save even if `step % save_every_steps != 0` (SIGTERM, end).

    Returns:
      Whether a save was started. Returns at once; `wait()` blocks until
      the checkpoint is on disk.
    """
    # A population's stacked state has one step per member, all equal.
    step = int(jax.device_get(state.step).reshape(-1)[0])
    if not force and step % self.save_every_steps:
      return False
    if step in self._manager.all_steps():
      if step in self._corrupt or step != self._manager.latest_step():
        logging.warning(
          'not saving step %d: %s already holds a checkpoint of that step '
          '(never overwritten)',
          step,
          self.directory / str(step),
        )
      return False
    if CHECKSUM_KEY in meta:
      raise ValueError(f'meta key {CHECKSUM_KEY!r} is reserved')
    on_disk = to_disk(state)
    # From the host copy now: the caller may donate `state` after we return.
    meta = {**meta, CHECKSUM_KEY: checksums(on_disk)}
    args = ocp.args.Composite(
      state=SaveState(on_disk), meta=ocp.args.JsonSave(meta)
    )
    with self._disk_full():  # This save's start, or the one before's end.
      return self._manager.save(step, args=args, force=True)

  @contextlib.contextmanager
  def _disk_full(self):
    """A full disk under a save as one line (DiskFull). Every open
    manager of the process is closed first (their saves in flight fail on
    the same disk), so that no save thread outlives the error to print
    at the interpreter's exit."""
    try:
      yield
    except Exception as e:
      if not storage_faults.is_disk_full(e):
        raise
      for other in list(_OPEN):
        other._quietly_close()
      steps = storage_faults.committed_steps(self.directory)
      steps = [s for s in steps if s not in self._corrupt]
      raise storage_faults.disk_full(
        self.directory, doing='saving a checkpoint', steps=steps
      ) from None

  def restore_latest(
    self, abstract_state, relayout=None
  ) -> tuple[Any, dict] | None:
    """The newest checkpoint that restores cleanly, or None if there is none.

    A checkpoint that fails to read (truncated, missing file) or whose
    arrays do not match their saved checksums is skipped with a warning
    naming its step and path, and kept on disk (listed in
    corrupt_steps.json); the one before it is tried next.

    Args:
      abstract_state: the expected tree, leaves `jax.ShapeDtypeStruct` (from
        `jax.eval_shape`; give them a `sharding` to restore sharded).
      relayout: a checkpoint of tables split over another device count
        (mtl/shell/sharded_restore.py's `Relayout`), moved to this one.

    Returns:
      `(state, meta)`, or None when no checkpoint restores.

    Raises:
      CheckpointError: (a ValueError) the newest readable checkpoint has
        another tree structure or other shapes (a workdir of another model);
        nothing is touched.
    """
    for step in reversed(self.all_steps()):
      try:
        return self.restore_step(step, abstract_state, relayout)
      except CorruptCheckpoint as e:
        path = self.directory / str(step)
        logging.warning(
          'skipping corrupt checkpoint at step %d (%s): %s', step, path, e
        )
        self._mark_corrupt(step)
    return None

  def saved_tree(self, step: int):
    """The state's tree metadata; CorruptCheckpoint if it cannot be read."""
    try:
      saved = self._manager.item_metadata(step)['state']
      saved = getattr(saved, 'tree', saved)
    except Exception as e:  # Anything unreadable is corrupt.
      raise CorruptCheckpoint(storage_faults.reason(e, self.directory)) from e
    if saved is None:
      raise CorruptCheckpoint('no state metadata')
    return saved

  def read_meta(self, step: int) -> dict:
    """A checkpoint's meta alone; CorruptCheckpoint if unreadable."""
    try:
      out = self._manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
      )
    except Exception as e:
      raise CorruptCheckpoint(storage_faults.reason(e, self.directory)) from e
    return dict(out['meta'] or {})

  def restore_step(self, step: int, abstract_state, relayout=None):
    convert = None
    if relayout is not None:  # The tree as saved, then the reader's layout.
      abstract_state, convert = relayout.plan(
        self.read_meta(step), abstract_state
      )
    on_disk = to_disk(abstract_state)
    saved = self.saved_tree(step)
    check_compatible(saved, on_disk, directory=self.directory, step=step)
    try:
      out = self._manager.restore(
        step,
        args=ocp.args.Composite(
          state=RestoreState(on_disk),
          meta=ocp.args.JsonRestore(),
        ),
      )
    except Exception as e:
      raise CorruptCheckpoint(storage_faults.reason(e, self.directory)) from e
    meta = dict(out['meta'] or {})
    saved_sums = meta.pop(CHECKSUM_KEY, None)
    if saved_sums is None:
      logging.info(
        '%s step %d has no checksums (older mtl)', self.directory, step
      )
    else:
      problem = verify_checksums(out['state'], saved_sums)
      if problem:
        raise CorruptCheckpoint(problem)
    state = from_disk(out['state'], abstract_state)
    return (state if convert is None else convert(state)), meta

  def read_tree(self, step: int, target):
    """The on-disk state tree of `step` read onto `target` (leaves
    ShapeDtypeStruct, with the shardings to read onto), as saved: no
    checksums verified, key data not wrapped. For reading a checkpoint
    that another device layout wrote."""
    args = ocp.args.Composite(state=RestoreState(target))
    return self._manager.restore(step, args=args)['state']

  def _mark_corrupt(self, step: int) -> None:
    self._corrupt.add(step)
    if jax.process_index() == 0 and not self._read_only:
      retention.record_corrupt_steps(self.directory, self._corrupt)

  def wait(self) -> None:
    """Blocks until every started save is on disk."""
    with self._disk_full():
      self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then releases the manager."""
    with self._disk_full():
      self._manager.wait_until_finished()
    self._manager.close()
    _OPEN.discard(self)

  def _quietly_close(self) -> None:
    for end in ('wait_until_finished', 'close'):
      with contextlib.suppress(Exception):
        getattr(self._manager, end)()
    _OPEN.discard(self)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def restore_params(directory, abstract_params):
  """Params of the newest good checkpoint under `directory` (`init_from`).

  Only reads: the other run's directory is never written to.

  Args:
    directory: another run's checkpoint directory.
    abstract_params: the expected params tree (ShapeDtypeStruct leaves).

  Returns:
    `(params, step)`.

  Raises:
    NoCheckpoint: (a CheckpointError and FileNotFoundError) no checkpoint
      there restores.
    CheckpointError: the params do not match `abstract_params` (one line).
  """
  ckpt = Checkpointer(directory, read_only=True, async_save=False)
  try:
    for step in reversed(ckpt.all_steps()):
      try:
        saved = ckpt.saved_tree(step)
        check_compatible(
          saved.get('params'),
          to_disk(abstract_params),
          directory=ckpt.directory,
          step=step,
        )
        full = jax.tree.map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), saved
        )
        state, _ = ckpt.restore_step(step, full)
        return from_disk(state['params'], abstract_params), step
      except CorruptCheckpoint as e:
        logging.warning(
          'init_from: skipping step %d of %s: %s', step, directory, e
        )
  finally:
    ckpt.close()
  raise NoCheckpoint(f'init_from: no readable checkpoint in {directory}')
