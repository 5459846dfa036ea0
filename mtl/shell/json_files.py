"""Atomic JSON files and metrics.jsonl cut back on resume (shell code).

- `write_json`: a JSON file written to a temporary name, synced and renamed
  over the target, so that a crash never leaves a half-written file (the
  workdir's config record, results.json, corrupt_steps.json, ...).
- `truncate_metrics`: a resumed run logs the steps after its checkpoint
  again, so metrics.jsonl drops the rows it holds after that step.
"""

import json
import logging
import os
import pathlib

from mtl.errors import WorkdirError

# At most this many characters of a bad metrics.jsonl line are shown.
MAX_LINE_CHARS = 40


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
        line[:MAX_LINE_CHARS],
      )
      continue
    if step is None:
      raise WorkdirError(
        f'{path} line {i + 1} is not a metrics row '
        f'({line.strip()[:MAX_LINE_CHARS]!r}), expected a JSON object with '
        'an integer "step"'
      )
    if step <= after_step:
      kept.append(line if line.endswith('\n') else line + '\n')
  if kept != lines:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(''.join(kept))
    tmp.replace(path)
