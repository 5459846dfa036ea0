"""A full disk during a run: one line, the last checkpoint intact.

Faithful, without filling the machine's disk: the run (a fork of
tests/cli.py's server, as root like CI) enters a mount namespace of its
own (unshare(2) CLONE_NEWNS) and writes its workdir on a 160 KiB tmpfs
mounted there, which the kernel fills as the run saves its second
checkpoint: the writes fail with a real ENOSPC from TensorStore's threads.
What the run left on the tmpfs is copied out at its exit (atexit) for the
assertions. Oracle: the checkpoint steps committed on the tmpfs (the
directories orbax renamed to <step>) and their restore.

The mapping itself (mtl/shell/storage_faults.py) is tested on a real
OSError(ENOSPC) from /dev/full in tests/shell/test_storage_faults.py.
"""

import json
import re
import subprocess
import sys

import pytest

from mtl.shell import restore, storage_faults
from tests import cli

SIZE = '160k'  # Holds config, metrics and one smoke checkpoint, not two.

PATCH = """
import atexit, ctypes, shutil
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x20000, 0x4000, 0x40000
assert libc.unshare(CLONE_NEWNS) == 0, ctypes.get_errno()
assert libc.mount(b'none', b'/', None, MS_REC | MS_PRIVATE, None) == 0
assert libc.mount(b'tmpfs', {disk!r}.encode(), b'tmpfs', 0, b'size={size}') == 0
atexit.register(shutil.copytree, {disk!r} + '/run', {after!r}, symlinks=True)
"""


def _private_mounts_allowed() -> bool:
  """Whether this kernel lets the test's process mount its own tmpfs (root
  with CAP_SYS_ADMIN, as on this project's CI machines)."""
  probe = (
    'import ctypes; libc = ctypes.CDLL(None, use_errno=True); '
    'raise SystemExit(libc.unshare(0x20000))'
  )
  return subprocess.run([sys.executable, '-c', probe]).returncode == 0


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
  if not _private_mounts_allowed():
    pytest.skip(
      'no mount namespace here: the ENOSPC mapping is tested on '
      '/dev/full in tests/shell/test_storage_faults.py'
    )
  disk, after = tmp_path / 'disk', tmp_path / 'after'
  disk.mkdir()
  proc = cli.run(
    [
      '--config=configs/smoke.py',
      f'--workdir={disk / "run"}',
      '--config.checkpoint.every_steps=4',
      '--config.checkpoint.max_to_keep=10',
    ],
    env=cli.one_device_env(JAX_PLATFORMS='cpu', WANDB_MODE='disabled'),
    patch=PATCH.format(disk=str(disk), after=str(after), size=SIZE),
  )
  assert not any(disk.iterdir())  # The tmpfs was the run's alone.
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [x for x in proc.stderr.splitlines() if 'error:' in x]
  assert errors == [proc.stderr.strip().splitlines()[-1]], proc.stderr
  steps = storage_faults.committed_steps(after / 'checkpoints')
  assert steps, 'expected the first checkpoint to fit'
  assert errors[0] == (
    f'mtl-train: error: {disk / "run" / "checkpoints"}: no space left on '
    'device (errno 28) while saving a checkpoint: free space and rerun; the '
    f'last checkpoint, step {steps[-1]}, is intact'
  )
  assert not (after / 'results.json').exists()
  half = [p.name for p in (after / 'checkpoints').iterdir()]
  assert any(re.fullmatch(r'\d+\.orbax-checkpoint-tmp.*', n) for n in half)
  # The intact checkpoint restores (the rerun resumes from it).
  run = restore.open_run(after)
  params, where = restore.restore_params(run, str(steps[-1]))
  assert where['step'] == steps[-1]
  recorded = json.loads((after / 'config.json').read_text())
  assert recorded['checkpoint']['every_steps'] == 4
  assert params
