"""Checkpoints of the whole TrainState plus the data position (shell code).

One orbax `CheckpointManager` per workdir (`<workdir>/checkpoints/<step>/`),
each step holding `state` (the TrainState, StandardSave, written
uncompressed by `_StateHandler`) and `meta` (a JSON dict: the data position
and anything else the loop wants back). Saves are
asynchronous: the device-to-host copy is synchronous (orbax's default), so the
loop may donate the state right after `save` returns; the write to disk runs
in the background until `wait()`.

Integrity: every checkpoint carries the sha256 of each saved array, taken
from the host copy of the state when `save` is called (before an async
write starts) and stored in the `meta` item under CHECKSUM_KEY; a restore
recomputes them from what it read, so flipped bytes that orbax decodes
without complaint are caught. A checkpoint written before checksums existed
restores unverified.

Disk policy (nothing already saved is deleted by a failed run):
- orbax deletes only through the retention policy, and only after a save; it
  never deletes on a failed or corrupt restore. Half-written temporary
  directories (`<step>.orbax-checkpoint-tmp-*`, never committed, never
  restorable) are removed with a warning only when the caller holds the
  workdir lock and says so (`remove_stale_tmp=True`): then no live writer can
  own them.
- Retention keeps the newest `max_to_keep` (>= 1) checkpoints that are not
  known to be corrupt, plus every checkpoint that `restore_latest` skipped as
  corrupt (unreadable or failing its checksums):
  those are kept for a human to inspect, listed in
  `<directory>/corrupt_steps.json` so that later runs keep them too.
- A save at a step that already exists is skipped, never overwritten.
- A full disk under a save (ENOSPC) is one line, `DiskFull`, naming the
  newest committed checkpoint, which stays intact (orbax commits a save by
  renaming its temporary directory; mtl/shell/storage_faults.py).

Typed PRNG keys are stored as their raw key data and wrapped again on restore
with the implementation of the abstract state's key, so they round-trip
bitwise whatever orbax does with key dtypes.
"""

import contextlib
import json
import logging
import pathlib
import shutil
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mtl.errors import CheckpointError, ConfigError
from mtl.shell import storage_faults
from mtl.shell.checkpoint_integrity import (
  check_compatible,
  checksums,
  verify_checksums,
)
from mtl.shell.workdir import write_json

CORRUPT_STEPS_FILE = 'corrupt_steps.json'
# The meta item's key for {leaf path: "<dtype>:<sha256 hex>"}; never returned
# to the caller.
CHECKSUM_KEY = '_sha256'
TMP_SUFFIX = '.orbax-checkpoint-tmp'


class _StateHandler(ocp.StandardCheckpointHandler):
  """orbax's StandardCheckpointHandler (the same args and restore), its
  arrays written without zstd compression.

  Why (measured on a 384 MB state of random float32, 1M-row tables and
  their Adam moments, experiments/results/scale_streaming_50m_train.md):
  compressed, the save raised peak RSS by 354 MB (tensorstore holds each
  encoded chunk) and took 2.8 s; uncompressed, +5 MB and 0.9 s, and the
  files are as large (trained float32 barely compresses). The on-disk
  format is otherwise the same (zarr with the compressor recorded per
  array), so checkpoints written compressed by earlier versions restore.
  """

  def __init__(self):
    super().__init__()
    # StandardCheckpointHandler has no compression switch; its `_impl` is
    # the PyTreeCheckpointHandler it delegates to, made as it makes it.
    self._impl = ocp.PyTreeCheckpointHandler(use_compression=False)


# orbax finds an item's handler by its args' class: these are StandardSave
# and StandardRestore, registered with _StateHandler.
@ocp.args.register_with_handler(_StateHandler, for_save=True)
class _SaveState(ocp.args.StandardSave):
  pass


@ocp.args.register_with_handler(_StateHandler, for_restore=True)
class _RestoreState(ocp.args.StandardRestore):
  pass


class NoCheckpoint(CheckpointError, FileNotFoundError):
  """No checkpoint of a directory restores (`init_from`)."""


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(getattr(x, 'dtype', None), jax.dtypes.prng_key)


def _key_impl(abstract_key):
  """The PRNG implementation of a (possibly abstract) typed key."""
  found = []
  jax.eval_shape(lambda k: found.append(jax.random.key_impl(k)), abstract_key)
  return found[0]


def _to_disk(tree):
  """Typed keys -> raw key data (works on concrete and abstract trees)."""

  def leaf(x):
    if not _is_key(x):
      return x
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.eval_shape(jax.random.key_data, x)
    return jax.random.key_data(x)

  return jax.tree.map(leaf, tree)


def _from_disk(tree, abstract):
  """Restored arrays -> jax arrays, key data wrapped as the abstract keys."""

  def leaf(x, a):
    if _is_key(a):
      return jax.random.wrap_key_data(x, impl=_key_impl(a))
    return jnp.asarray(x)

  return jax.tree.map(leaf, tree, abstract)


# The open Checkpointers of this process (closed together on a full disk).
_OPEN = weakref.WeakSet()


class _KeepLatestAndCorrupt:
  """Orbax preservation policy: the newest n good steps, and all corrupt."""

  def __init__(self, n: int | None, corrupt: set[int]):
    self.n, self.corrupt = n, corrupt

  def should_preserve(self, checkpoints, *, context):
    del context
    good = sorted(c.step for c in checkpoints if c.step not in self.corrupt)
    keep = set(good if self.n is None else good[max(len(good) - self.n, 0) :])
    return [c.step in keep or c.step in self.corrupt for c in checkpoints]


def corrupt_steps(directory) -> list[int]:
  """The steps a restore found corrupt under `directory` (kept there)."""
  path = pathlib.Path(directory) / CORRUPT_STEPS_FILE
  return json.loads(path.read_text())['steps'] if path.exists() else []


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
    self._corrupt = set(self._read_corrupt())
    if remove_stale_tmp and not read_only:
      self._remove_stale_tmp()
    self._manager = ocp.CheckpointManager(
      self.directory,
      # Named handlers, so a fresh manager can read metadata before any save.
      item_handlers={
        'state': _StateHandler(),
        'meta': ocp.JsonCheckpointHandler(),
      },
      options=ocp.CheckpointManagerOptions(
        preservation_policy=_KeepLatestAndCorrupt(max_to_keep, self._corrupt),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=False,
        read_only=read_only,
        create=not read_only,
        # orbax names its cross-process barriers by step; a prefix per
        # manager keeps two managers saving the same step (the latest and
        # the best checkpoint at the last epoch) from meeting at each
        # other's barriers (seen: two processes hung, one in each save).
        multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix=barrier_prefix
        ),
      ),
    )

  def _remove_stale_tmp(self) -> None:
    if not self.directory.is_dir():
      return
    for path in sorted(self.directory.glob(f'*{TMP_SUFFIX}*')):
      logging.warning(
        'removing %s: a checkpoint its writer never finished (the process '
        'died while saving)',
        path,
      )
      if path.is_dir():
        shutil.rmtree(path)
      else:
        path.unlink()

  def _read_corrupt(self) -> list[int]:
    return corrupt_steps(self.directory)

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
    on_disk = _to_disk(state)
    # From the host copy now: the caller may donate `state` after we return.
    meta = {**meta, CHECKSUM_KEY: checksums(on_disk)}
    args = ocp.args.Composite(
      state=_SaveState(on_disk), meta=ocp.args.JsonSave(meta)
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

  def restore_latest(self, abstract_state) -> tuple[Any, dict] | None:
    """The newest checkpoint that restores cleanly, or None if there is none.

    A checkpoint that fails to read (truncated, missing file) or whose
    arrays do not match their saved checksums is skipped with a warning
    naming its step and path, and kept on disk (listed in
    corrupt_steps.json); the one before it is tried next.

    Args:
      abstract_state: the expected tree, leaves `jax.ShapeDtypeStruct` (from
        `jax.eval_shape`; give them a `sharding` to restore sharded).

    Returns:
      `(state, meta)`, or None when no checkpoint restores.

    Raises:
      CheckpointError: (a ValueError) the newest readable checkpoint has
        another tree structure or other shapes (a workdir of another model);
        nothing is touched.
    """
    for step in reversed(self.all_steps()):
      try:
        return self._restore(step, abstract_state)
      except _Corrupt as e:
        path = self.directory / str(step)
        logging.warning(
          'skipping corrupt checkpoint at step %d (%s): %s', step, path, e
        )
        self._mark_corrupt(step)
    return None

  def _saved_tree(self, step: int):
    """The state's tree metadata; _Corrupt if it cannot be read."""
    try:
      saved = self._manager.item_metadata(step)['state']
      saved = getattr(saved, 'tree', saved)
    except Exception as e:  # Anything unreadable is corrupt.
      raise _Corrupt(storage_faults.reason(e, self.directory)) from e
    if saved is None:
      raise _Corrupt('no state metadata')
    return saved

  def _restore(self, step: int, abstract_state):
    on_disk = _to_disk(abstract_state)
    saved = self._saved_tree(step)
    check_compatible(saved, on_disk, directory=self.directory, step=step)
    try:
      out = self._manager.restore(
        step,
        args=ocp.args.Composite(
          state=_RestoreState(on_disk),
          meta=ocp.args.JsonRestore(),
        ),
      )
    except Exception as e:
      raise _Corrupt(storage_faults.reason(e, self.directory)) from e
    meta = dict(out['meta'] or {})
    saved_sums = meta.pop(CHECKSUM_KEY, None)
    if saved_sums is None:
      logging.info(
        '%s step %d has no checksums (older mtl)', self.directory, step
      )
    else:
      problem = verify_checksums(out['state'], saved_sums)
      if problem:
        raise _Corrupt(problem)
    return _from_disk(out['state'], abstract_state), meta

  def read_tree(self, step: int, target):
    """The on-disk state tree of `step` read onto `target` (leaves
    ShapeDtypeStruct, with the shardings to read onto), as saved: no
    checksums verified, key data not wrapped. For reading a checkpoint
    that another device layout wrote."""
    args = ocp.args.Composite(state=_RestoreState(target))
    return self._manager.restore(step, args=args)['state']

  def _mark_corrupt(self, step: int) -> None:
    self._corrupt.add(step)
    if jax.process_index() == 0 and not self._read_only:
      write_json(
        self.directory / CORRUPT_STEPS_FILE, {'steps': sorted(self._corrupt)}
      )

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


class _Corrupt(Exception):
  pass


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
        saved = ckpt._saved_tree(step)
        check_compatible(
          saved.get('params'),
          _to_disk(abstract_params),
          directory=ckpt.directory,
          step=step,
        )
        full = jax.tree.map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), saved
        )
        state, _ = ckpt._restore(step, full)
        return _from_disk(state['params'], abstract_params), step
      except _Corrupt as e:
        logging.warning(
          'init_from: skipping step %d of %s: %s', step, directory, e
        )
  finally:
    ckpt.close()
  raise NoCheckpoint(f'init_from: no readable checkpoint in {directory}')
