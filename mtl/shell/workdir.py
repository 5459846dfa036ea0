"""The workdir is a contract: one run, one config, one writer (shell code).

`open_workdir(path, config_dict, allow_changes=...)` is called once, before
any data is read, and held (a context manager) until the run ends. It

1. checks that the workdir can be written (`check_writable`): a workdir that
   is a file, lies under a file, cannot be created or written is a one-line
   `WorkdirError` before any work;
2. locks it (`WorkdirLock`, the file `<workdir>/.lock`): a second live run on
   the same workdir is a one-line `WorkdirError` naming the pid and host that
   hold it;
3. checks the config against the one the workdir was trained with
   (`check_config`): the `fingerprint` of the keys that change the trained
   numbers must match, else a one-line `WorkdirError` names the keys that
   differ (old -> new), unless `allow_changes` (the config key
   `workdir_allow_changes`);
4. records the config (`record_config`): `config.json` (the resolved config
   of the latest run, as before) and `fingerprint.json` (see
   `FINGERPRINT_FILE`), only after the check passed.

In a multi-process JAX run only process 0 does all of this (only it writes
the workdir); every process then learns whether it succeeded, so that all of
them stop together with a one-line error instead of waiting for process 0.

`write_json` (atomic JSON files) and `truncate_metrics` (metrics.jsonl on
resume) live here too.
"""

import datetime
import fnmatch
import hashlib
import json
import logging
import os
import pathlib
import tempfile
from typing import Any

from mtl.errors import WorkdirError
from mtl.shell.lock import LOCK_FILE, WorkdirLock  # noqa: F401 (API)

CONFIG_FILE = 'config.json'
# {"digest": sha256 of `keys`, "keys": {dotted key: value} (the keys that
# count, see EXCLUDED_KEYS), "num_epochs": ..., "changes": [{"time": ...,
# "keys": {key: [old, new]}}, ...] (deliberate changes, workdir_allow_changes)}.
# A separate file, so that config.json stays the plain resolved config that
# other tools read. A workdir written before fingerprints existed has only
# config.json: its fingerprint is computed from that.
FINGERPRINT_FILE = 'fingerprint.json'

# Config keys that do not change the trained numbers, so a rerun may change
# them freely (fnmatch patterns on dotted keys; the value says why). Every
# other key counts, new keys included: a key is excluded only when it is
# known not to matter. Besides these, `weighting.<method>.*` counts only for
# the chosen `weighting_name` (the other methods' parameters are unused).
EXCLUDED_KEYS = {
  # Deliberately extendable: rerunning with more epochs resumes and goes on.
  # Note that a cosine schedule's length is num_epochs: the extended run
  # then differs from a fresh run of the new length (a warning says so).
  'num_epochs': 'more epochs resume and continue the run',
  'progress_bar': 'console output only',
  'log_every_steps': 'what is logged, not what is trained',
  'diagnostics_every_steps': 'what is logged, not what is trained',
  'wandb.*': 'where metrics are sent',
  'profile.*': 'which steps a profiler traces, not what they compute',
  'checkpoint.*': 'when and how many checkpoints are kept; resume is exact',
  'eval_batch_size': 'evaluation pads and masks: the same metrics',
  'parallel.*': 'data parallelism runs the same steps on the same batches',
  # Both modes take the same batches of the same permutation through the
  # same step (tests/test_train_step.py: scanned device steps == host steps);
  # steps_per_dispatch only groups those steps into compiled calls.
  'input_mode': 'the same batches in the same order through the same step',
  'steps_per_dispatch': 'how many steps one compiled call runs',
  'max_consecutive_nonfinite': 'when a diverging run stops, not its numbers',
  'divergence_factor': 'when a diverging run warns, not its numbers',
  'stop_on_divergence': 'whether a diverging run stops, not its numbers',
  'dataset.data_dir': 'a path: the same prepared data may move',
  'dataset.manual_dir': 'a path: the same raw files may move',
  'dataset.chunksize': 'rows per read while preparing: the same data',
  'workdir_allow_changes': 'the override of this check itself',
}

# At most this many differing keys are named in the error, then '...'.
MAX_KEYS_NAMED = 3
MAX_VALUE_CHARS = 40


# --- JSON files ------------------------------------------------------------


def write_json(path: pathlib.Path, value: dict) -> None:
  """Writes JSON atomically: a crash never leaves a half-written file."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + '.tmp')
  with tmp.open('w') as f:
    f.write(json.dumps(value, indent=2, sort_keys=True) + '\n')
    f.flush()
    os.fsync(f.fileno())
  tmp.replace(path)


def _row_step(line: str):
  """The step of a metrics.jsonl line, or None if it is not a whole row."""
  try:
    row = json.loads(line)
  except ValueError:
    return None
  step = row.get('step') if isinstance(row, dict) else None
  return step if isinstance(step, int) else None


def truncate_metrics(path: pathlib.Path, *, after_step: int) -> None:
  """Drops rows logged after `after_step`: a resumed run logs them again.

  A half-written last line (the process died in the middle of a write) is
  dropped with a warning; a line that is not a row anywhere else is a
  one-line `WorkdirError` (the file was edited or damaged), and the file is
  left as it is.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    return
  lines = path.read_bytes().decode('utf-8', 'replace').splitlines(True)
  last = max((i for i, x in enumerate(lines) if x.strip()), default=-1)
  kept = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    step = _row_step(line)
    if step is None and i == last:
      logging.warning(
        'dropping the half-written last line of %s: %r',
        path,
        line[:MAX_VALUE_CHARS],
      )
      continue
    if step is None:
      raise WorkdirError(
        f'{path} line {i + 1} is not a metrics row '
        f'({line.strip()[:MAX_VALUE_CHARS]!r}), expected a JSON object with '
        'an integer "step"'
      )
    if step <= after_step:
      kept.append(line if line.endswith('\n') else line + '\n')
  if kept != lines:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(''.join(kept))
    tmp.replace(path)


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
  try:
    with tempfile.NamedTemporaryFile(dir=path, prefix='.write-test-') as f:
      f.write(b'mtl')
      f.flush()
  except OSError as e:
    raise WorkdirError(
      f'--workdir {path} is not writable: {e.strerror or e}'
    ) from e
  return path


# --- Config fingerprint ----------------------------------------------------


def _plain(value):
  """JSON-ready and canonical: tuples become lists, as in config.json."""
  return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flatten(value, prefix='') -> dict[str, Any]:
  if isinstance(value, dict) and value:
    out = {}
    for k, v in value.items():
      out.update(_flatten(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: value}


def _excluded(key: str, chosen_weighting) -> bool:
  if any(fnmatch.fnmatchcase(key, p) for p in EXCLUDED_KEYS):
    return True
  parts = key.split('.')
  return (
    len(parts) > 2 and parts[0] == 'weighting' and parts[1] != chosen_weighting
  )


# Values a key once had, as the value that means the same now.
_LEGACY = {'select_best': {True: 'first', False: 'last'}}


def _current(keys: dict) -> dict:
  """`keys` with legacy values as today's (select_best True: 'first')."""
  return {
    k: _LEGACY[k].get(v, v) if k in _LEGACY and isinstance(v, bool) else v
    for k, v in keys.items()
  }


def _canonical(value) -> str:
  return json.dumps(value, sort_keys=True, separators=(',', ':'))


def fingerprint(config_dict: dict) -> tuple[str, dict[str, Any]]:
  """The config keys that change the trained numbers, and their digest.

  Args:
    config_dict: the resolved config, `config.to_dict()` (or config.json).

  Returns:
    `(digest, keys)`: `keys` maps each dotted key that counts (every key
    but EXCLUDED_KEYS and the unchosen weighting methods' parameters) to its
    JSON value; `digest` is the sha256 of their canonical JSON.
  """
  flat = _current(_flatten(_plain(config_dict)))
  chosen = flat.get('weighting_name')
  keys = {k: v for k, v in sorted(flat.items()) if not _excluded(k, chosen)}
  return hashlib.sha256(_canonical(keys).encode()).hexdigest(), keys


def _show(value) -> str:
  text = _canonical(value)
  if len(text) > MAX_VALUE_CHARS:
    text = text[: MAX_VALUE_CHARS - 3] + '...'
  return text


def _differences(old: dict, new: dict) -> dict[str, tuple]:
  """Keys in both with other values, in key order: {key: (old, new)}."""
  return {
    k: (old[k], new[k])
    for k in sorted(old.keys() & new.keys())
    if _canonical(old[k]) != _canonical(new[k])
  }


def _summary(diffs: dict[str, tuple]) -> str:
  named = [
    f'{k} {_show(a)} -> {_show(b)}'
    for k, (a, b) in list(diffs.items())[:MAX_KEYS_NAMED]
  ]
  more = len(diffs) - MAX_KEYS_NAMED
  return ', '.join(named) + (f', ... ({more} more)' if more > 0 else '')


def _read_json(path: pathlib.Path):
  """The file's JSON object, None if missing; WorkdirError if unreadable."""
  if not path.exists():
    return None
  try:
    value = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise WorkdirError(
      f'{path} cannot be read ({type(e).__name__}: {e}), expected the JSON '
      'this workdir was recorded with'
    ) from e
  if not isinstance(value, dict):
    raise WorkdirError(f'{path} holds {type(value).__name__}, expected {{}}')
  return value


def has_trained_state(workdir) -> bool:
  """Whether the workdir holds a checkpoint or results of a run."""
  workdir = pathlib.Path(workdir)
  if (workdir / 'results.json').exists():
    return True
  for name in ('checkpoints', 'checkpoints_best'):
    d = workdir / name
    if d.is_dir() and any(p.name.isdigit() for p in d.iterdir()):
      return True
  return False


def recorded(workdir) -> dict | None:
  """The fingerprint record of the workdir (see FINGERPRINT_FILE), or None.

  A workdir of an earlier mtl has config.json only: the record is computed
  from it.
  """
  workdir = pathlib.Path(workdir)
  record = _read_json(workdir / FINGERPRINT_FILE)
  if record is not None and isinstance(record.get('keys'), dict):
    return record
  config = _read_json(workdir / CONFIG_FILE)
  if config is None:
    return None
  digest, keys = fingerprint(config)
  return {
    'digest': digest,
    'keys': keys,
    'num_epochs': config.get('num_epochs'),
    'changes': [],
  }


def check_config(
  workdir, config_dict: dict, *, allow_changes: bool = False
) -> dict[str, tuple]:
  """Compares the config with the one the workdir's run was trained with.

  Only a workdir that holds trained state (a checkpoint or results.json) is
  checked; one whose earlier run saved nothing is simply reused. Keys only
  one side has (a newer or older mtl) are named in a warning, not an error:
  users cannot add keys to the locked config, only mtl versions do.

  Args:
    workdir: the run directory.
    config_dict: the resolved config of this run (`config.to_dict()`).
    allow_changes: continue the run with the new values (the config key
      `workdir_allow_changes`); they are named in a warning and in the
      record's `changes`.

  Returns:
    The differing keys, `{key: (old, new)}` (empty unless allow_changes).

  Raises:
    WorkdirError: (one line) the fingerprint differs and not allow_changes;
      or the workdir holds trained state but no readable config record.
  """
  workdir = pathlib.Path(workdir).absolute()
  if not has_trained_state(workdir):
    return {}
  try:
    record = recorded(workdir)
  except WorkdirError:
    if not allow_changes:
      raise
    record = None
  if record is None:
    if allow_changes:
      logging.warning(
        '%s holds checkpoints but no readable %s: continuing with this '
        'config (workdir_allow_changes)',
        workdir,
        CONFIG_FILE,
      )
      return {}
    raise WorkdirError(
      f'workdir {workdir} holds checkpoints but no {CONFIG_FILE}: whose run '
      'they are is unknown; use another --workdir, or set '
      '--config.workdir_allow_changes=True to continue it with this config'
    )
  digest, keys = fingerprint(config_dict)
  old = _current(record['keys'])
  one_sided = sorted(old.keys() ^ keys.keys())
  if one_sided:
    logging.warning(
      'config keys only in the recorded run or only in this one (another '
      'mtl version), not compared: %s',
      ', '.join(one_sided),
    )
  diffs = _differences(old, keys) if digest != record.get('digest') else {}
  if diffs and not allow_changes:
    raise WorkdirError(
      f'workdir {workdir} holds a run of another config: {_summary(diffs)}; '
      'use another --workdir, or set --config.workdir_allow_changes=True to '
      'continue that run with the new values'
    )
  if diffs:
    logging.warning(
      'continuing the run in %s with changed config keys '
      '(workdir_allow_changes): %s',
      workdir,
      _summary(diffs),
    )
  old_epochs = record.get('num_epochs')
  new_epochs = config_dict.get('num_epochs')
  schedule = (config_dict.get('optimizer') or {}).get('schedule', 'constant')
  if old_epochs not in (None, new_epochs) and schedule != 'constant':
    logging.warning(
      'num_epochs %s -> %s with the %r schedule: its length follows '
      'num_epochs, so the continued run differs from a fresh %s-epoch run',
      old_epochs,
      new_epochs,
      schedule,
      new_epochs,
    )
  return diffs


def record_config(
  workdir, config_dict: dict, *, changes: dict[str, tuple] | None = None
) -> None:
  """Writes fingerprint.json, then config.json (atomically, each).

  Args:
    workdir: the run directory (exists).
    config_dict: the resolved config of this run.
    changes: the differences `check_config` allowed, appended to the
      record's history.
  """
  workdir = pathlib.Path(workdir)
  digest, keys = fingerprint(config_dict)
  try:
    previous = _read_json(workdir / FINGERPRINT_FILE) or {}
  except WorkdirError:
    previous = {}
  history = list(previous.get('changes') or [])
  if changes:
    history.append(
      {
        'time': datetime.datetime.now().astimezone().isoformat('T', 'seconds'),
        'keys': {k: [a, b] for k, (a, b) in changes.items()},
      }
    )
  write_json(
    workdir / FINGERPRINT_FILE,
    {
      'digest': digest,
      'keys': keys,
      'num_epochs': config_dict.get('num_epochs'),
      'changes': history,
    },
  )
  write_json(workdir / CONFIG_FILE, _plain(config_dict))


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
