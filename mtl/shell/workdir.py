"""The workdir is a contract: one run, one config, one writer (shell code).

`open_workdir(path, config_dict, allow_changes=...)` is called once, before
any data is read, and held (a context manager) until the run ends. It

1. checks that the workdir can be written (`check_writable`): a workdir that
   is a file, lies under a file, cannot be created or written is a one-line
   `WorkdirError` before any work;
2. locks it (`WorkdirLock`, the file `<workdir>/.lock`, mtl/shell/lock.py):
   a second live run on the same workdir is a one-line `WorkdirError` naming
   the pid and host that hold it;
3. checks the config against the one the workdir was trained with
   (`check_config`, mtl/shell/config_record.py): the `fingerprint` of the
   keys that change the trained numbers (mtl/shell/config_fingerprint.py)
   must match, else a one-line `WorkdirError` names the keys that differ
   (old -> new), unless `allow_changes` (the config key
   `workdir_allow_changes`);
4. records the config (`record_config`): `config.json` (the resolved config
   of the latest run, as before) and `fingerprint.json`, only after the
   check passed.

In a multi-process JAX run only process 0 does all of this (only it writes
the workdir); every process then learns whether it succeeded, so that all of
them stop together with a one-line error instead of waiting for process 0.
"""

import pathlib
import tempfile

from mtl.errors import WorkdirError
from mtl.shell.config_record import check_config, record_config
from mtl.shell.lock import LOCK_FILE, WorkdirLock  # noqa: F401 (API)

# --- Writability -----------------------------------------------------------


def check_writable(workdir) -> pathlib.Path:
  """Creates `workdir` if needed and proves a file can be written in it.

  Returns:
    The workdir as an absolute path.

  Raises:
    WorkdirError: (one line) the workdir is a file, lies under a file or a
      directory this user cannot search, cannot be created, or a file cannot
      be written in it. As root, permission
      bits do not stop writes, so only a read-only filesystem (or one that
      refuses root) is caught there.
  """
  path = pathlib.Path(workdir).absolute()
  try:  # exists() raises on a directory on the way that cannot be searched
    if path.exists() and not path.is_dir():
      raise WorkdirError(
        f'--workdir {path} is a file, expected a directory (or a path to '
        'create one at)'
      )
    for parent in path.parents:
      if parent.exists():
        if not parent.is_dir():
          raise WorkdirError(
            f'--workdir {path} lies under {parent}, which is a file, '
            'expected a directory'
          )
        break
  except OSError as e:
    raise WorkdirError(
      f'--workdir {path} cannot be reached: {e.strerror or e} '
      f'({e.filename}), expected directories this user can search'
    ) from e
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise WorkdirError(
      f'--workdir {path} cannot be created: {e.strerror or e}'
    ) from e
  _check_entries(path)
  try:
    with tempfile.NamedTemporaryFile(dir=path, prefix='.write-test-') as f:
      f.write(b'mtl')
      f.flush()
  except OSError as e:
    raise WorkdirError(
      f'--workdir {path} is not writable: {e.strerror or e}'
    ) from e
  return path


# What a run writes in its workdir, by kind: an entry of the other kind
# there would fail the run late (at the first save, or after the last
# evaluation), so it is refused before any work.
DIRECTORIES = ('checkpoints', 'checkpoints_best', 'members')
FILES = (
  'config.json',
  'fingerprint.json',
  'preprocessing.json',
  'results.json',
)


def _check_entries(path: pathlib.Path) -> None:
  for name in DIRECTORIES:
    entry = path / name
    if entry.exists() and not entry.is_dir():
      raise WorkdirError(
        f'--workdir {path}: {name} is a file, expected the {name} directory '
        'the run writes (move it away)'
      )
  for name in FILES:
    entry = path / name
    if entry.is_dir():
      raise WorkdirError(
        f'--workdir {path}: {name} is a directory, expected the file the '
        'run writes (move it away)'
      )


# --- The whole contract ----------------------------------------------------


class Workdir:
  """An open workdir: writable, locked by this run, its config recorded.

  Attributes:
    path: the absolute workdir path.
    chief: whether this process writes the workdir (JAX process 0).
    lock: the held WorkdirLock (None on the other processes).
    changes: the config changes allowed by workdir_allow_changes.
  """

  def __init__(self, path, chief, lock, changes):
    self.path, self.chief, self.lock, self.changes = path, chief, lock, changes

  def record(self, config_dict: dict) -> None:
    """Records the config (fingerprint.json, config.json) on process 0.

    `open_workdir(..., record=False)` defers this until the run has shown
    that the workdir's state loads into this config (a checkpoint of another
    model shape must not leave config.json describing the new one).
    """
    if self.chief:
      record_config(self.path, config_dict, changes=self.changes)

  def close(self) -> None:
    """Releases the lock (idempotent)."""
    if self.lock is not None:
      self.lock.release()
      self.lock = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _process() -> tuple[int, int]:
  import jax  # Here: the checks above do not need JAX.

  return jax.process_index(), jax.process_count()


def _agree(ok: bool) -> bool:
  """Process 0's `ok` on every process (a multi-process run)."""
  import numpy as np
  from jax.experimental import multihost_utils

  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def open_workdir(
  path, config_dict: dict, *, allow_changes: bool = False, record: bool = True
) -> Workdir:
  """Checks, locks and records the workdir; hold it until the run ends.

  Call before reading any data. Process 0 checks writability, takes the
  lock, checks the config against the recorded one and records it; in a
  multi-process run every process then learns whether that succeeded.

  Args:
    path: the --workdir.
    config_dict: the resolved config (`config.to_dict()`).
    allow_changes: the config key `workdir_allow_changes`.
    record: record the config now; else the caller calls `Workdir.record`.

  Returns:
    A `Workdir` (a context manager that releases the lock).

  Raises:
    WorkdirError: one line, on every process: not writable, locked by
      another live run, or a run of another config.
  """
  index, count = _process()
  chief = index == 0
  lock, changes, error = None, {}, None
  if chief:
    try:
      path = check_writable(path)
      lock = WorkdirLock(path).acquire()
      try:
        changes = check_config(path, config_dict, allow_changes=allow_changes)
        if record:
          record_config(path, config_dict, changes=changes)
      except BaseException:
        lock.release()
        raise
    except BaseException as e:
      if count == 1:
        raise
      error = e
  path = pathlib.Path(path).absolute()
  if count > 1:
    ok = _agree(error is None)
    if error is not None:
      raise error
    if not ok:
      raise WorkdirError(
        f'workdir {path}: process 0 could not open it (its error says why)'
      )
  return Workdir(path, chief, lock, changes)
