"""What goes wrong under checkpoint reads and writes, said in one line
(shell code): a short reason for an unreadable checkpoint, a full disk,
and the noise of orbax's and TensorStore's threads kept off the console.

- `reason`: TensorStore's errors are a status, a chain of contexts and the
  whole JSON spec of the store (a truncated checkpoint's error line was
  over 1,400 characters); kept: the status, the file and the last cause.
- A full disk (OSError errno 28, or TensorStore's RESOURCE_EXHAUSTED with
  os_error_code 28) is `DiskFull`: `<path>: no space left on device (errno
  28) ...: free space and rerun; the last checkpoint, step N, is intact`.
  Orbax's background save threads log the same failure each with its
  traceback (684 lines, 10 tracebacks, on a smoke run here); `quiet` drops
  those records and, once a DiskFull was made, whatever orbax's remaining
  save threads log or leave unraisable: the one line says it.
- "Event loop is closed": orbax runs a restore on a fresh asyncio loop and
  closes it as soon as the restore raises (orbax.checkpoint._src
  .asyncio_utils._run_sync_via_new_loop), while the TensorStore reads
  started with the failing one are still in flight; when they complete,
  TensorStore's own threads call the closed loop's call_soon_threadsafe
  and report the RuntimeError as unraisable, one traceback per read. The
  loop and the reads are the libraries', so nothing of ours can wait for
  them; the failure itself is the restore's exception. `quiet` therefore
  drops exactly that unraisable: RuntimeError('Event loop is closed'),
  raised by asyncio's call_soon_threadsafe, in a thread Python did not
  start (a TensorStore thread); every other one reaches the previous hook.
"""

import errno
import logging
import os
import pathlib
import re
import sys
import threading

from mtl.errors import DiskFull

# TensorStore appends the store's spec and the OS error to a message.
_TS_SUFFIX = re.compile(
  r' \[(tensorstore_spec|os_error_code|source_locations)='
)
_TS_STATUS = re.compile(r'^[A-Z][A-Z_]+: ')
_TS_FILE = re.compile(r'file "([^"]+)"')
_ENOSPC_TS = f"[os_error_code='{errno.ENOSPC}']"
_QUIET = '_mtl_quiet'
_ORBAX = f'{os.sep}orbax{os.sep}'
# Set once a DiskFull was made: the run is ending on its one line, and what
# orbax's remaining save threads log or leave unraisable follows from it.
_disk_full_seen = threading.Event()


def reason(error: BaseException, root=None) -> str:
  """One short line of why `error` happened; a TensorStore message becomes
  '<STATUS>: <file, relative to root>: <last cause>'."""
  text = str(error).strip()
  first = text.splitlines()[0] if text else ''
  kind = type(error).__name__
  match = _TS_SUFFIX.search(first)
  if match is None and not _TS_STATUS.match(first):
    return f'{kind}: {first}'[:300] if first else kind
  first = first[: match.start()] if match else first
  status = _TS_STATUS.match(first)
  files = _TS_FILE.findall(first)
  cause = first.rsplit(': ', 1)[-1]
  parts = [status.group(0)[:-2]] if status else [kind]
  if files:
    parts.append(files[-1])
  out = ': '.join([*parts, cause])
  if root is not None:  # Paths relative to the checkpoint folder named.
    out = out.replace(str(root).rstrip('/') + '/', '')
  return out[:300]


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (or an exception it was raised from) is ENOSPC."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if _ENOSPC_TS in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def disk_full(path, *, steps, doing: str = '') -> DiskFull:
  """The one-line error of a full disk under `path` (while `doing`);
  `steps`: the committed checkpoints (the newest is intact)."""
  kept = (
    f'the last checkpoint, step {max(steps)}, is intact'
    if steps
    else 'no checkpoint was written yet'
  )
  doing = f' while {doing}' if doing else ''
  _disk_full_seen.set()
  return DiskFull(
    f'{path}: no space left on device (errno {errno.ENOSPC}){doing}: free '
    f'space and rerun; {kept}'
  )


def committed_steps(directory) -> list[int]:
  """The steps of the checkpoints orbax committed under `directory` (a
  finished save is renamed to <step>; a half-written one has a suffix)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def written(error: OSError, workdir) -> DiskFull:
  """A full disk while writing a run's file (results, metrics): names the
  file and the newest checkpoint of <workdir>/checkpoints."""
  steps = committed_steps(pathlib.Path(workdir) / 'checkpoints')
  return disk_full(error.filename or workdir, steps=steps)


class _DiskFullRecords(logging.Filter):
  """Drops orbax's log records of a failed write on a full disk."""

  def filter(self, record) -> bool:
    if _disk_full_seen.is_set() and _ORBAX in record.pathname:
      return False  # A save thread failing after the disk filled.
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None and is_disk_full(exc):
      return False
    message = record.getMessage()
    return _ENOSPC_TS not in message and os.strerror(errno.ENOSPC) not in (
      message
    )


def _closed_loop_in_library_thread(unraisable) -> bool:
  exc = unraisable.exc_value
  if not (isinstance(exc, RuntimeError) and str(exc) == 'Event loop is closed'):
    return False
  if not isinstance(threading.current_thread(), threading._DummyThread):
    return False  # A thread of Python's: not the libraries' callback.
  tb, names = unraisable.exc_traceback, []
  while tb is not None:
    names.append(tb.tb_frame.f_code.co_name)
    tb = tb.tb_next
  return 'call_soon_threadsafe' in names


def _from_orbax(unraisable) -> bool:
  tb = unraisable.exc_traceback
  while tb is not None:
    if _ORBAX in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return _ORBAX in getattr(
    getattr(unraisable.object, 'cr_code', None), 'co_filename', ''
  )


def quiet() -> None:
  """Installs (once, idempotent) the log filter and the unraisable hook
  described above."""
  from absl import logging as absl_logging

  handler = absl_logging.get_absl_handler()  # On the root: every logger's.
  if not any(isinstance(f, _DiskFullRecords) for f in handler.filters):
    handler.addFilter(_DiskFullRecords())
  previous = sys.unraisablehook
  if getattr(previous, _QUIET, False):
    return

  def hook(unraisable):
    after_disk_full = _disk_full_seen.is_set() and _from_orbax(unraisable)
    if not (_closed_loop_in_library_thread(unraisable) or after_disk_full):
      previous(unraisable)

  setattr(hook, _QUIET, True)
  sys.unraisablehook = hook
