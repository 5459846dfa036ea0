"""Exact resume through the command line: split runs, SIGKILL and SIGTERM.

Every case is compared with one uninterrupted run of the same config: the
final checkpoint's whole TrainState (params, Adam moments, rng, step) must be
bitwise identical, and so must the reported metrics. A run to be signalled
is held at a known step until the signal arrives (tests/forked.py), so each
case interrupts the same step however fast the machine is.
"""

import json
import pathlib
import shutil
import signal
import sys

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


# The stop check's calls an epoch (tests/forked.py's HOLD): 16 steps of 4 a
# dispatch, so after steps 4, 8 and 12 of it and after its end.
CALLS_PER_EPOCH = 4


@pytest.fixture
def start():
  """Starts `mtl-train` in the background and returns it once it holds at
  stop check `call`, until a signal arrives: a process of its own, forked
  from tests/cli.py's server (tests/forked.py), which SIGKILL and SIGTERM
  reach like any other, without paying the imports again."""
  runs = []

  def _start(workdir, call):
    runs.append(forked.start(command(workdir)[3:], env(), hold_at=call))
    return runs[-1]

  yield _start
  for run_ in runs:
    run_.close()


def _committed(workdir):
  """The checkpoint steps orbax committed (renamed to the step)."""
  done = (workdir / 'checkpoints').glob('*/commit_success.txt')
  return sorted(int(p.parent.name) for p in done if p.parent.name.isdigit())


def test_sigkill_then_rerun_ends_like_an_uninterrupted_run(
  tmp_path, reference, start
):
  # Held at step 24, just after its checkpoint was started in the
  # background (the one of step 16 was committed first): SIGKILL runs no
  # handler, and may cut that save short.
  proc = start(tmp_path, call=CALLS_PER_EPOCH + 2)
  assert 16 in _committed(tmp_path)
  proc.kill()
  proc.wait(timeout=30)
  newest = _committed(tmp_path)[-1]
  assert newest in (16, 24)
  result = run(tmp_path)
  assert result['resumed_from_step'] == newest
  assert_same_run(tmp_path, reference)


@pytest.mark.parametrize(
  'call, step',
  [(CALLS_PER_EPOCH + 1, 20), (2 * CALLS_PER_EPOCH, 32)],
  ids=['mid_epoch', 'epoch_end'],
)
def test_sigterm_saves_the_current_step_and_exits_143(
  tmp_path, reference, start, call, step
):
  proc = start(tmp_path, call=call)
  proc.send_signal(signal.SIGTERM)
  returncode = proc.wait(timeout=60)
  stderr = proc.stderr()
  assert returncode == 143, stderr[-3000:]
  line = [x for x in stderr.splitlines() if 'preempted at step' in x]
  assert line == [
    f'mtl-train: preempted at step {step}: checkpoint saved; rerun the '
    'same command to resume'
  ], stderr[-3000:]
  assert _committed(tmp_path)[-1] == step
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
