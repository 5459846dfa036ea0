"""What a user sees on the terminal (shell code).

By default: one progress bar (steps/s and the latest losses), one line per
evaluation, warnings, and a final summary. Metric records go to
metrics.jsonl, never to the console. Every line is written through the bar
(`tqdm.write`), so a line never shares the terminal row of a redraw.
"""

import logging
import sys
import time

import tqdm
from absl import logging as absl_logging

# Without a terminal (a log file, a batch job) the bar is one plain line at
# most this often, instead of redraws joined by carriage returns.
LINE_EVERY_S = 30.0


def progress_bar(*, total: int, initial: int, enabled: bool, desc=None):
  """The run's tqdm bar on stderr (steps/s; losses set as its postfix).

  On a terminal it redraws in place. When stderr is not a terminal (a log
  file, a batch job), the bar's state is written as a plain line once every
  LINE_EVERY_S seconds, and nothing else: no carriage returns, no line for
  a run shorter than that.
  """
  tty = sys.stderr.isatty()
  return tqdm.tqdm(
    total=total,
    initial=min(initial, total),
    disable=not enabled,
    unit='step',
    desc=desc,
    dynamic_ncols=tty,
    ncols=None if tty else 100,
    file=sys.stderr if tty else _Lines(sys.stderr, LINE_EVERY_S),
    leave=False,
  )


class _Lines:
  """tqdm's redraws ('\\r' + bar) as whole lines on `stream`, at most one
  every `every_s` seconds (the first after `every_s`); clearing writes and
  the states in between are dropped."""

  def __init__(self, stream, every_s: float):
    self._stream, self._every = stream, every_s
    self._last = time.monotonic()

  def write(self, text: str) -> None:
    now = time.monotonic()
    parts = [p for p in text.replace('\r', '\n').split('\n') if p.strip()]
    if parts and now - self._last >= self._every:
      self._last = now
      self._stream.write(parts[-1].rstrip() + '\n')

  def flush(self) -> None:
    self._stream.flush()

  def isatty(self) -> bool:
    return False


def say(line: str) -> None:
  """One line on stderr, on its own row even while a bar is drawn."""
  tqdm.tqdm.write(line, file=sys.stderr)


def format_metrics(scalars: dict, prefix: str) -> str:
  """'auc/income 0.9467  auc/marital 0.9947' of the keys under `prefix/`."""
  parts = []
  for key in sorted(scalars):
    if key.startswith(prefix + '/') and not key.endswith('/epoch'):
      value = scalars[key]
      if value is None:
        continue
      parts.append(f'{key[len(prefix) + 1 :]} {float(value):.4f}')
  return '  '.join(parts)


class _ThroughBar:
  """A stream whose lines go through `say`: log records never share a row
  with a progress-bar redraw."""

  def write(self, text: str) -> None:
    for line in text.splitlines():
      if line.strip():
        say(line)

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass

  def isatty(self) -> bool:
    return sys.stderr.isatty()

  def fileno(self) -> int:
    return sys.stderr.fileno()


def route_logs(*, plain: bool = True) -> None:
  """Sends absl's (and so the root logger's) records through the bar.

  `plain`: 'warning: <message>' instead of absl's 'W1129 02:28:20.68 <tid>
  file.py:100] <message>' (kept with -v, where the source line helps).
  """
  handler = absl_logging.get_absl_handler().python_handler
  if isinstance(handler, logging.StreamHandler):
    handler.setStream(_ThroughBar())
    if plain:
      handler.setFormatter(
        logging.Formatter('mtl-train: %(levelname)s: %(message)s')
      )
