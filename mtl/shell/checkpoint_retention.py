"""What a checkpoint directory keeps on disk (shell code).

Nothing already saved is deleted by a failed run:
- orbax deletes only through the retention policy, and only after a save; it
  never deletes on a failed or corrupt restore. Half-written temporary
  directories (`<step>.orbax-checkpoint-tmp-*`, never committed, never
  restorable) are removed with a warning only when the caller holds the
  workdir lock and says so (`remove_stale_tmp`): then no live writer can
  own them.
- Retention (`KeepLatestAndCorrupt`) keeps the newest `max_to_keep` (>= 1)
  checkpoints that are not known to be corrupt, plus every checkpoint that a
  restore skipped as corrupt (unreadable or failing its checksums): those
  are kept for a human to inspect, listed in `<directory>/corrupt_steps.json`
  (`corrupt_steps`, `record_corrupt_steps`) so that later runs keep them too.

Used by mtl/shell/checkpoint.py and mtl/shell/checkpoint_orbax.py.
"""

import json
import logging
import pathlib
import shutil

from mtl.errors import CheckpointError
from mtl.shell.json_files import write_json

CORRUPT_STEPS_FILE = 'corrupt_steps.json'
TMP_SUFFIX = '.orbax-checkpoint-tmp'


class KeepLatestAndCorrupt:
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
  if not path.exists():
    return []
  try:
    steps = json.loads(path.read_text())['steps']
    if not isinstance(steps, list) or not all(
      isinstance(s, int) for s in steps
    ):
      raise TypeError(f'steps {steps!r}')
    return steps
  except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(
      f'{path}: unreadable ({type(e).__name__}: {e}), expected '
      '{"steps": [<int>, ...]}; delete it to check every checkpoint afresh'
    ) from e


def record_corrupt_steps(directory, steps) -> None:
  """Writes `<directory>/corrupt_steps.json` listing `steps` (sorted)."""
  write_json(
    pathlib.Path(directory) / CORRUPT_STEPS_FILE, {'steps': sorted(steps)}
  )


def remove_stale_tmp(directory) -> None:
  """Removes the half-written `*.orbax-checkpoint-tmp*` entries under
  `directory` a dead writer left, with a warning naming each. Only for a
  caller that holds the workdir lock (no live writer then)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return
  for path in sorted(directory.glob(f'*{TMP_SUFFIX}*')):
    logging.warning(
      'removing %s: a checkpoint its writer never finished (the process '
      'died while saving)',
      path,
    )
    if path.is_dir():
      shutil.rmtree(path)
    else:
      path.unlink()
