"""Exact resume through the command line: split runs, SIGKILL and SIGTERM.

Every case is compared with one uninterrupted run of the same config: the
final checkpoint's whole TrainState (params, Adam moments, rng, step) must be
bitwise identical, and so must the reported metrics.
"""

import json
import pathlib
import shutil
import signal
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import cli, forked

REPO = pathlib.Path(__file__).resolve().parents[2]
# 8 epochs x 16 steps, a checkpoint every 8 steps, 4 steps per dispatch; the
# constant schedule lets a 4-epoch run be continued to 8 epochs unchanged.
ARGS = [
  '--config=configs/smoke.py',
  '--config.dataset.n_train=1024',
  '--config.num_epochs=8',
  '--config.optimizer.schedule=constant',
  '--config.checkpoint.every_steps=8',
  '--config.checkpoint.max_to_keep=2',
]
TOTAL_STEPS = 8 * 1024 // 64


def command(workdir, *extra):
  return [
    sys.executable,
    '-m',
    'mtl.shell.main',
    *ARGS,
    f'--workdir={workdir}',
    *extra,
  ]


def env():
  return cli.one_device_env()


def run(workdir, *extra):
  proc = cli.run(command(workdir, *extra)[3:], env=env(), timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads((workdir / 'results.json').read_text())


def final_state(workdir):
  steps = sorted(
    int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()
  )
  assert steps[-1] == TOTAL_STEPS, steps
  return ocp.StandardCheckpointer().restore(
    workdir / 'checkpoints' / str(steps[-1]) / 'state'
  )


def assert_same_run(workdir, reference):
  got, want = final_state(workdir), final_state(reference)
  jax.tree.map(np.testing.assert_array_equal, got, want)
  r_got = json.loads((workdir / 'results.json').read_text())
  r_want = json.loads((reference / 'results.json').read_text())
  assert r_got['test'] == r_want['test']
  assert r_got['selected_epoch'] == r_want['selected_epoch']

  # Every training and validation row, in order; end-of-run summaries
  # (rows with test/ keys) are left out: a finished 4-epoch run wrote one.
  def rows(w):
    all_rows = [json.loads(x) for x in open(w / 'metrics.jsonl')]
    return [r for r in all_rows if not any(k.startswith('test/') for k in r)]

  assert rows(workdir) == rows(reference)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('reference')
  run(workdir)
  return workdir


def test_half_then_resume_is_bitwise_identical(tmp_path, reference):
  first = run(tmp_path, '--config.num_epochs=4')
  assert first['steps'] == TOTAL_STEPS // 2
  second = run(tmp_path)
  assert second['resumed_from_step'] == TOTAL_STEPS // 2
  assert_same_run(tmp_path, reference)


@pytest.fixture
def start():
  """Starts `mtl-train` in the background: a process of its own, forked
  from tests/cli.py's server (tests/forked.py), which SIGKILL and SIGTERM
  reach like any other, without paying the imports again."""
  runs = []

  def _start(workdir):
    runs.append(forked.start(command(workdir)[3:], env()))
    return runs[-1]

  yield _start
  for run_ in runs:
    run_.close()


def _wait_for_checkpoint(proc, workdir, timeout=120):
  """Waits until at least one checkpoint has been committed."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    done = (workdir / 'checkpoints').glob('*/commit_success.txt')
    if any(p.parent.name.isdigit() for p in done):  # Not a tmp dir.
      return
    assert proc.poll() is None, proc.stderr()[-3000:]
    time.sleep(0.05)
  proc.kill()
  pytest.fail('no checkpoint was written in time')


def test_sigkill_then_rerun_ends_like_an_uninterrupted_run(
  tmp_path, reference, start
):
  proc = start(tmp_path)
  _wait_for_checkpoint(proc, tmp_path)
  time.sleep(np.random.default_rng().uniform(0.0, 0.5))
  proc.kill()  # SIGKILL: no handler runs, an async save may be cut short.
  proc.wait(timeout=30)
  result = run(tmp_path)
  assert 0 < result['resumed_from_step'] <= TOTAL_STEPS
  assert_same_run(tmp_path, reference)


def test_sigterm_saves_the_current_step_and_exits_143(
  tmp_path, reference, start
):
  proc = start(tmp_path)
  _wait_for_checkpoint(proc, tmp_path)
  proc.send_signal(signal.SIGTERM)
  returncode = proc.wait(timeout=60)
  stderr = proc.stderr()
  if returncode == 0:  # It finished first; nothing to interrupt.
    pytest.skip('the run ended before SIGTERM arrived')
  assert returncode == 143, stderr[-3000:]
  line = [x for x in stderr.splitlines() if 'preempted at step' in x]
  assert len(line) == 1, stderr[-3000:]
  step = int(line[0].split('preempted at step ')[1].split(':')[0])
  assert (tmp_path / 'checkpoints' / str(step) / 'commit_success.txt').exists()
  assert not (tmp_path / 'results.json').exists()
  result = run(tmp_path)
  assert result['resumed_from_step'] == step
  assert_same_run(tmp_path, reference)


def test_workdir_of_another_model_shape_is_one_line_and_untouched(
  tmp_path, reference
):
  # A finished run of ARGS: a copy of the reference's workdir (which
  # records no path of its own) rather than a run of its own.
  shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
  before = sorted(str(p) for p in tmp_path.rglob('*') if p.name != '.lock')

  def rerun(*args):
    proc = cli.run(
      command(tmp_path, '--config.model.num_experts=3', *args)[3:],
      env=env(),
      timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('mtl-train: error: ')
    assert '\n' not in last
    return last

  # The workdir's recorded config refuses the other model first ...
  last = rerun()
  assert 'holds a run of another config: model.num_experts 2 -> 3' in last
  # ... and a deliberate override still cannot load the other shape.
  last = rerun('--config.workdir_allow_changes=true')
  assert 'does not match the model' in last
  assert 'has shape (2, 8), expected (3, 8)' in last
  after = sorted(str(p) for p in tmp_path.rglob('*') if p.name != '.lock')
  assert after == before
  # config.json still describes the run the checkpoints hold.
  recorded = json.loads((tmp_path / 'config.json').read_text())
  assert recorded['model']['num_experts'] == 2
