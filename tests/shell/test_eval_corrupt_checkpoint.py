"""mtl-eval on a damaged best checkpoint: one line, a way out, no noise.

A finished smoke run's checkpoints_best/ is damaged two ways (a data file
truncated; the OCDBT manifest deleted). mtl-eval must end with exit 2 and
one stderr line naming the folder, a short reason (no TensorStore spec)
and `--checkpoint=latest`, which then evaluates; nothing in the workdir is
written or changed, and none of orbax's or TensorStore's threads prints a
traceback ("Event loop is closed": mtl/shell/storage_faults.py).
"""

import hashlib
import json
import shutil

import pytest

from tests import cli

SMOKE = [
  '--config=configs/smoke.py',
  '--config.checkpoint.async_save=false',
]


def _env():
  return cli.one_device_env(JAX_PLATFORMS='cpu', WANDB_MODE='disabled')


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('eval-corrupt') / 'run'
  proc = cli.run(SMOKE + [f'--workdir={workdir}'], env=_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def _hashes(workdir):
  return {
    str(p): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(workdir.rglob('*'))
    if p.is_file()
  }


def _truncate_data(state):
  for f in (state / 'd').iterdir():  # The arrays' data files.
    f.write_bytes(f.read_bytes()[:20])
  return 'OUT_OF_RANGE: '


def _delete_manifest(state):
  (state / 'manifest.ocdbt').unlink()
  return 'NOT_FOUND: '


@pytest.mark.parametrize('damage', [_truncate_data, _delete_manifest])
def test_a_damaged_best_checkpoint_is_one_line_suggesting_latest(
  finished, tmp_path, damage
):
  workdir = tmp_path / 'run'
  shutil.copytree(finished, workdir)
  (best,) = [p for p in (workdir / 'checkpoints_best').iterdir()]
  status = damage(best / 'state')
  latest = max(
    int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()
  )
  before = _hashes(workdir)
  proc = cli.run(
    [f'--workdir={workdir}'], env=_env(), module='mtl.shell.evaluate'
  )
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.count('\n') == 1, proc.stderr  # no traceback
  line = proc.stderr.strip()
  prefix = (
    f'mtl-eval: error: {workdir / "checkpoints_best"}: no checkpoint '
    f'restores (step {best.name}: {status}{best.name}/state/'
  )
  assert line.startswith(prefix), line
  reason = line[len(prefix) :].split('); try')[0]
  assert 'tensorstore_spec' not in line and len(reason) < 160, line
  assert line.endswith(
    f'); try --checkpoint=latest (step {latest} in {workdir / "checkpoints"})'
  ), line
  assert _hashes(workdir) == before  # Nothing written, nothing lost.

  ok = cli.run(
    [f'--workdir={workdir}', '--checkpoint=latest'],
    env=_env(),
    module='mtl.shell.evaluate',
  )
  assert ok.returncode == 0 and ok.stderr == '', ok.stderr
  out = json.loads((workdir / f'eval_validation_step{latest}.json').read_text())
  assert out['step'] == latest
