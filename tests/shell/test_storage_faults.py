"""mtl/shell/storage_faults.py: short reasons, a full disk, library noise.

Oracles: a real ENOSPC from the kernel (writing to /dev/full), TensorStore
messages as the probe printed them with the expected short line written by
hand, and unraisable exceptions raised for real in a thread Python did not
start (_thread.start_new_thread, as TensorStore's C++ threads appear to
Python) and in one it did.
"""

import _thread
import asyncio
import errno
import logging
import sys
import threading

import pytest

from mtl.errors import DiskFull, WorkdirError
from mtl.shell import storage_faults

SPEC = (
  ' [tensorstore_spec=\'{"context":{"cache_pool":{}},"driver":"zarr",'
  '"kvstore":{"driver":"ocdbt","path":"step/"}}\']'
)
TRUNCATED = (
  'OUT_OF_RANGE: Error opening "zarr" driver: Error reading "step/.zarray" '
  'in OCDBT database at local file "/w/checkpoints_best/16/state/": Error '
  'reading Byte range [0, 3611) of local file "/w/checkpoints_best/16/state/'
  'd/8c27": Requested byte range [0, 3611) is not valid for value of size 20'
)


@pytest.fixture(autouse=True)
def _fresh_disk_full_flag(monkeypatch):
  """A DiskFull made here must not quiet orbax for later tests."""
  monkeypatch.setattr(storage_faults, '_disk_full_seen', threading.Event())


def _dev_full() -> OSError:
  """The kernel's own ENOSPC: /dev/full refuses every write."""
  with pytest.raises(OSError) as e:
    with open('/dev/full', 'wb', buffering=0) as f:
      f.write(b'x')
  return e.value


def test_a_tensorstore_reason_is_status_file_and_cause():
  error = ValueError(TRUNCATED + SPEC)
  assert storage_faults.reason(error, '/w/checkpoints_best') == (
    'OUT_OF_RANGE: 16/state/d/8c27: Requested byte range [0, 3611) is not '
    'valid for value of size 20'
  )
  assert storage_faults.reason(error) == (
    'OUT_OF_RANGE: /w/checkpoints_best/16/state/d/8c27: Requested byte '
    'range [0, 3611) is not valid for value of size 20'
  )


def test_other_reasons_keep_their_first_line():
  error = ValueError('Expecting value: line 1 column 101 (char 100)\nmore')
  assert storage_faults.reason(error) == (
    'ValueError: Expecting value: line 1 column 101 (char 100)'
  )
  assert storage_faults.reason(KeyError()) == 'KeyError'


def test_enospc_from_the_kernel_is_a_full_disk(tmp_path):
  error = _dev_full()
  assert error.errno == errno.ENOSPC
  assert storage_faults.is_disk_full(error)
  for step in ('4', '8', '12.orbax-checkpoint-tmp-1'):
    (tmp_path / 'checkpoints' / step).mkdir(parents=True)
  line = storage_faults.written(error, tmp_path)
  assert isinstance(line, DiskFull) and isinstance(line, WorkdirError)
  # A failed write() names no file: the workdir is named.
  assert str(line) == (
    f'{tmp_path}: no space left on device (errno 28): free space and rerun; '
    'the last checkpoint, step 8, is intact'
  )
  named = OSError(errno.ENOSPC, 'No space left on device', '/w/results.json')
  assert str(storage_faults.written(named, tmp_path)).startswith(
    '/w/results.json: no space left on device (errno 28): '
  )
  fresh = storage_faults.written(error, tmp_path / 'nothing')
  assert str(fresh).endswith('rerun; no checkpoint was written yet')


def test_tensorstore_enospc_and_chained_causes_count_others_do_not():
  ts = ValueError(
    f"RESOURCE_EXHAUSTED: Failed writing{SPEC} [os_error_code='28']"
  )
  assert storage_faults.is_disk_full(ts)
  try:
    try:
      raise _dev_full()
    except OSError as inner:
      raise RuntimeError('save failed') from inner
  except RuntimeError as outer:
    assert storage_faults.is_disk_full(outer)
  assert not storage_faults.is_disk_full(OSError(errno.EFBIG, 'too large'))
  assert not storage_faults.is_disk_full(ValueError("[os_error_code='2']"))


def test_orbax_disk_full_records_are_dropped_others_kept():
  from absl import logging as absl_logging

  storage_faults.quiet()
  (flt,) = [
    f
    for f in absl_logging.get_absl_handler().filters
    if isinstance(f, storage_faults._DiskFullRecords)
  ]
  full = logging.LogRecord('absl', 40, 'f', 1, 'save failed', (), None)
  full.exc_info = (OSError, _dev_full(), None)
  said = logging.LogRecord(
    'absl', 40, 'f', 1, 'Failed: No space left on device', (), None
  )
  other = logging.LogRecord('absl', 40, 'f', 1, 'Barrier timed out', (), None)
  assert [flt.filter(r) for r in (full, said, other)] == [False, False, True]


class _Late:
  """Calls a closed loop when collected, as TensorStore's read callbacks
  do after orbax closed the loop of a failed restore."""

  def __init__(self, loop):
    self.loop = loop

  def __del__(self):
    self.loop.call_soon_threadsafe(print)


def _in_thread(start, target):
  done = threading.Event()

  def body():
    try:
      target()
    finally:
      done.set()

  start(body)
  assert done.wait(10)


def test_closed_loop_noise_of_library_threads_only_is_dropped(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', lambda u: seen.append(u))
  storage_faults.quiet()
  storage_faults.quiet()  # Idempotent: one wrapper.
  loop = asyncio.new_event_loop()
  loop.close()
  foreign = lambda body: _thread.start_new_thread(body, ())  # noqa: E731
  python = lambda body: threading.Thread(target=body).start()  # noqa: E731

  _in_thread(foreign, lambda: _Late(loop))
  assert seen == []  # Dropped: a library thread's closed-loop callback.
  _in_thread(python, lambda: _Late(loop))
  assert len(seen) == 1 and str(seen[0].exc_value) == 'Event loop is closed'

  class Other:
    def __del__(self):
      raise RuntimeError('Event loop is closed')  # not from asyncio

  _in_thread(foreign, Other)
  assert len(seen) == 2
