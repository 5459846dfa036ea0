"""Checkpoints of the whole TrainState plus the data position (shell code).

One orbax `CheckpointManager` per workdir (`<workdir>/checkpoints/<step>/`),
each step holding `state` (the TrainState, StandardSave) and `meta` (a JSON
dict: the data position and anything else the loop wants back). Saves are
asynchronous: the device-to-host copy is synchronous (orbax's default), so the
loop may donate the state right after `save` returns; the write to disk runs
in the background until `wait()`.

Disk policy (DESIGN §8: nothing already saved is deleted by a failed run):
- orbax deletes only through the retention policy, and only after a save; it
  never deletes on a failed or corrupt restore, nor half-written temporary
  directories (`cleanup_tmp_directories` stays False).
- Retention keeps the newest `max_to_keep` checkpoints that are not known to
  be corrupt, plus every checkpoint that `restore_latest` skipped as corrupt:
  those are kept for a human to inspect, listed in
  `<directory>/corrupt_steps.json` so that later runs keep them too.
- A save at a step that already exists is skipped, never overwritten.

Typed PRNG keys are stored as their raw key data and wrapped again on restore
with the implementation of the abstract state's key, so they round-trip
bitwise whatever orbax does with key dtypes.
"""

import json
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mtl.shell.writers import write_json

CORRUPT_STEPS_FILE = 'corrupt_steps.json'


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


def _path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ('name', 'key', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return '/'.join(parts)


def _shapes(tree) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_path_str(p): tuple(x.shape) for p, x in leaves}


def check_compatible(saved_tree, abstract_tree, *, directory, step) -> None:
  """Raises a one-line ValueError at the first leaf that does not match.

  Args:
    saved_tree: the checkpoint's tree metadata (leaves have `.shape`).
    abstract_tree: what the caller expects (on-disk form, see `_to_disk`).
    directory: named in the message.
    step: named in the message.
  """
  found, expected = _shapes(saved_tree), _shapes(abstract_tree)
  problem = None
  for path, shape in expected.items():
    if path not in found:
      problem = f'{path} is missing (expected shape {shape})'
    elif found[path] != shape:
      problem = f'{path} has shape {found[path]}, expected {shape}'
    if problem:
      break
  else:
    extra = [p for p in found if p not in expected]
    if extra:
      problem = f'{extra[0]} (shape {found[extra[0]]}) is not in the model'
  if problem:
    raise ValueError(
      f'checkpoint {directory} step {step} does not match the model: {problem}'
    )


class _KeepLatestAndCorrupt:
  """Orbax preservation policy: the newest n good steps, and all corrupt."""

  def __init__(self, n: int | None, corrupt: set[int]):
    self.n, self.corrupt = n, corrupt

  def should_preserve(self, checkpoints, *, context):
    del context
    good = sorted(c.step for c in checkpoints if c.step not in self.corrupt)
    keep = set(good if self.n is None else good[max(len(good) - self.n, 0) :])
    return [c.step in keep or c.step in self.corrupt for c in checkpoints]


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
  ):
    if save_every_steps < 1:
      raise ValueError(f'save_every_steps is {save_every_steps}, expected >= 1')
    self.directory = pathlib.Path(directory).absolute()
    self.save_every_steps = save_every_steps
    self._read_only = read_only
    self._corrupt = set(self._read_corrupt())
    self._manager = ocp.CheckpointManager(
      self.directory,
      # Named handlers, so a fresh manager can read metadata before any save.
      item_handlers={
        'state': ocp.StandardCheckpointHandler(),
        'meta': ocp.JsonCheckpointHandler(),
      },
      options=ocp.CheckpointManagerOptions(
        preservation_policy=_KeepLatestAndCorrupt(max_to_keep, self._corrupt),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=False,
        read_only=read_only,
        create=not read_only,
      ),
    )

  def _read_corrupt(self) -> list[int]:
    path = self.directory / CORRUPT_STEPS_FILE
    return json.loads(path.read_text())['steps'] if path.exists() else []

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state, *, meta: dict, force: bool = False) -> bool:
    """Starts saving `state` at `state.step` if due (or `force`).

    Args:
      state: a TrainState (any pytree with an int `step` leaf works).
      meta: JSON-ready dict stored alongside, e.g. the data position.
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
    return self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(_to_disk(state)),
        meta=ocp.args.JsonSave(meta),
      ),
      force=True,
    )

  def restore_latest(self, abstract_state) -> tuple[Any, dict] | None:
    """The newest checkpoint that restores cleanly, or None if there is none.

    A checkpoint that fails to read (truncated, missing file) is skipped with
    a warning naming its step and path, and kept on disk; the one before it
    is tried next.

    Args:
      abstract_state: the expected tree, leaves `jax.ShapeDtypeStruct` (from
        `jax.eval_shape`; give them a `sharding` to restore sharded).

    Returns:
      `(state, meta)`, or None when no checkpoint restores.

    Raises:
      ValueError: the newest readable checkpoint has another tree structure
        or other shapes (a workdir of another model); nothing is touched.
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
      raise _Corrupt(f'{type(e).__name__}: {e}'.splitlines()[0]) from e
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
          state=ocp.args.StandardRestore(on_disk),
          meta=ocp.args.JsonRestore(),
        ),
      )
    except Exception as e:
      raise _Corrupt(f'{type(e).__name__}: {e}'.splitlines()[0]) from e
    return _from_disk(out['state'], abstract_state), dict(out['meta'] or {})

  def _mark_corrupt(self, step: int) -> None:
    self._corrupt.add(step)
    if jax.process_index() == 0 and not self._read_only:
      write_json(
        self.directory / CORRUPT_STEPS_FILE, {'steps': sorted(self._corrupt)}
      )

  def wait(self) -> None:
    """Blocks until every started save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()

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
    FileNotFoundError: no checkpoint there restores.
    ValueError: the params do not match `abstract_params` (one line).
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
  raise FileNotFoundError(f'init_from: no readable checkpoint in {directory}')
