"""A workdir's record of the config it was trained with (shell code).

- `check_config`: a new run's config against the recorded one. Only the
  `fingerprint` of the keys that change the trained numbers counts
  (mtl/shell/config_fingerprint.py); when it differs, a one-line
  `WorkdirError` names the keys that differ (old -> new), unless
  `allow_changes` (the config key `workdir_allow_changes`).
- `record_config`: `config.json` (the resolved config of the latest run)
  and `fingerprint.json` (see `FINGERPRINT_FILE`), each written atomically.
- `recorded`: the record itself, computed from config.json for a workdir
  of an mtl from before fingerprints; `has_trained_state`: whether there
  is a run to check against at all.

`open_workdir` (mtl/shell/workdir.py) calls the check and the record.
"""

import datetime
import json
import logging
import pathlib

from mtl.errors import WorkdirError
from mtl.shell.config_fingerprint import (
  as_current,
  differences,
  fingerprint,
  plain,
  summary,
)
from mtl.shell.json_files import write_json

CONFIG_FILE = 'config.json'
# {"digest": sha256 of `keys`, "keys": {dotted key: value} (the keys that
# count, config_fingerprint.EXCLUDED_KEYS), "num_epochs": ..., "changes":
# [{"time": ..., "keys": {key: [old, new]}}, ...] (deliberate changes,
# workdir_allow_changes)}.
# A separate file, so that config.json stays the plain resolved config that
# other tools read. A workdir written before fingerprints existed has only
# config.json: its fingerprint is computed from that.
FINGERPRINT_FILE = 'fingerprint.json'


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
  old = as_current(record['keys'])
  one_sided = sorted(old.keys() ^ keys.keys())
  if one_sided:
    logging.warning(
      'config keys only in the recorded run or only in this one (another '
      'mtl version), not compared: %s',
      ', '.join(one_sided),
    )
  diffs = differences(old, keys) if digest != record.get('digest') else {}
  if diffs and not allow_changes:
    raise WorkdirError(
      f'workdir {workdir} holds a run of another config: {summary(diffs)}; '
      'use another --workdir, or set --config.workdir_allow_changes=True to '
      'continue that run with the new values'
    )
  if diffs:
    logging.warning(
      'continuing the run in %s with changed config keys '
      '(workdir_allow_changes): %s',
      workdir,
      summary(diffs),
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
  write_json(workdir / CONFIG_FILE, plain(config_dict))
