"""The launchers end to end. launch/multiprocess_cpu.sh starts 2 processes
x 2 emulated CPU devices joined by jax.distributed: the run must equal one
process with 4 devices, and only process 0 may write. Every launcher
(launch/lib.sh) shows process 0's evaluations and summary, and a process
that fails is named with its exit code and last lines."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mtl.shell import checkpoint
from tests import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = 'configs/smoke.py:mmoe'
# Two processes add their shards' partial sums in another order than one
# process: a few ulps per step over 16 steps of Adam.
RTOL, ATOL = 1e-4, 1e-6


def _env():
  env = cli.one_device_env()
  bin_dir = str(pathlib.Path(sys.executable).parent)
  env.update(JAX_PLATFORMS='cpu', PATH=f'{bin_dir}:{env.get("PATH", "")}')
  return env


def _run(cmd, timeout=240, env=None):
  # jax.distributed catches SIGTERM: a hang is ended with SIGKILL.
  proc = subprocess.Popen(
    cmd,
    cwd=REPO,
    env=_env() if env is None else env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    start_new_session=True,
  )
  try:
    out = proc.communicate(timeout=timeout)[0]
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, 9)
    raise
  return proc.returncode, out


def _assert_shows_the_summary(out, workdir):
  """Process 0's evaluations and summary on the console; no wait errors."""
  lines = out.splitlines()
  assert any(line.startswith('val ') for line in lines), out[-2000:]
  assert any(line.startswith('test ') for line in lines), out[-2000:]
  assert f'workdir {workdir}' in lines, out[-2000:]
  assert 'wait:' not in out and 'no such job' not in out, out[-2000:]
  assert 'exited with' not in out, out[-2000:]


def _params(workdir):
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', read_only=True)
  step = ckpt.all_steps()[-1]
  # Saved over 4 devices; read back onto one, whatever this process has.
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
    ckpt.saved_tree(step),
  )
  tree = ckpt.read_tree(step, target)
  ckpt.close()
  return step, tree['params']


def _metrics(workdir):
  return [
    json.loads(line)
    for line in (workdir / 'metrics.jsonl').read_text().splitlines()
  ]


@pytest.mark.parametrize(
  'backend', ['pmap', pytest.param('shard_map', marks=pytest.mark.slow)]
)
def test_two_processes_of_two_devices_equal_one_process_of_four(
  tmp_path, backend
):
  one, two = tmp_path / 'one', tmp_path / 'two'
  flags = [f'--config.parallel.backend={backend}']
  proc = cli.run(  # `mtl-train ...` in a forked process (tests/cli.py).
    [
      f'--config={CONFIG}',
      f'--workdir={one}',
      '--num_cpu_devices=4',
      '--config.parallel.num_devices=0',
      '--config.input_mode=host',
      *flags,
    ],
    env=_env(),
    timeout=240,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The two processes log to W&B (offline), to show that process 0 alone
  # does; the one-process oracle need not (W&B changes no number).
  rc, out = _run(
    [
      'launch/multiprocess_cpu.sh',
      '2',
      '2',
      CONFIG,
      str(two),
      *flags,
      '--config.wandb.mode=offline',
    ]
  )
  logs = [(two / f'process_{i}.log').read_text() for i in range(2)]
  assert rc == 0, out[-2000:] + logs[0][-2000:] + logs[1][-2000:]
  _assert_shows_the_summary(out, two)

  want, got = (json.loads((d / 'results.json').read_text()) for d in (one, two))
  assert (got['num_processes'], got['num_devices']) == (2, 4)
  assert (want['num_processes'], want['num_devices']) == (1, 4)
  assert got['parallel_backend'] == want['parallel_backend'] == backend
  for split in ('validation', 'test'):
    for key, value in want[split].items():
      np.testing.assert_allclose(got[split][key], value, rtol=RTOL, err_msg=key)

  (step_a, params_a), (step_b, params_b) = _params(one), _params(two)
  assert step_a == step_b == want['steps']
  for a, b in zip(
    jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True
  ):
    np.testing.assert_allclose(
      np.asarray(b), np.asarray(a), rtol=RTOL, atol=ATOL
    )

  # Only process 0 wrote: one line per logged step (two writers would
  # double them), the same steps and values as the one-process run.
  m_one, m_two = _metrics(one), _metrics(two)
  assert [m['step'] for m in m_two] == [m['step'] for m in m_one]
  for a, b in zip(m_one, m_two, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      if key.startswith(('train/loss/', 'val/')):
        np.testing.assert_allclose(b[key], a[key], rtol=RTOL, err_msg=key)
  runs = list((two / 'wandb').glob('offline-run-*'))
  assert len(runs) == 1, runs  # Process 0's W&B run only.


@pytest.mark.slow
def test_processes_sharing_an_empty_data_dir_prepare_it_once(tmp_path):
  # Two processes start on a TFDS data_dir that holds nothing yet: process 0
  # prepares census-income while process 1 waits at a barrier, then both
  # read the one cache (side by side, the second rename of TFDS's temporary
  # directory onto the finished one would fail).
  data_dir, workdir = tmp_path / 'tfds', tmp_path / 'run'
  rc, out = _run(
    [
      'launch/multiprocess_cpu.sh',
      '2',
      '1',
      'configs/smoke.py:mmoe,census',
      str(workdir),
      f'--config.dataset.data_dir={data_dir}',
      '--config.num_epochs=1',
      '--config.batch_size=1024',
      '--config.eval_batch_size=4096',
      # Nothing here reads per-task gradient diagnostics or the training
      # log: none computed (one program fewer to compile in each process).
      '--config.diagnostics_every_steps=0',
      '--config.log_every_steps=1000',
    ],
    timeout=600,
  )
  logs = [(workdir / f'process_{i}.log').read_text() for i in range(2)]
  assert rc == 0, out[-2000:] + logs[0][-3000:] + logs[1][-3000:]
  # TFDS logs the preparation: process 0 did it, process 1 only read.
  assert 'Downloading and preparing dataset' in logs[0]
  assert 'Downloading and preparing dataset' not in logs[1]
  versions = list((data_dir / 'census_income').iterdir())
  assert [v.name for v in versions] == ['1.0.0'], versions
  results = json.loads((workdir / 'results.json').read_text())
  assert results['num_processes'] == 2
  # One epoch of a tiny MMoE: a chance model scores 0.5, census income
  # models about 0.93-0.95.
  assert 0.85 < results['test']['test/auc/income'] <= 1.0


# One epoch of the smoke config: seconds, and every line of a summary.
ONE_EPOCH = ('--config.num_epochs=1', '--config.progress_bar=false')


def test_local_sh_shows_the_summary(tmp_path):
  workdir = tmp_path / 'run'
  rc, out = _run(
    ['launch/local.sh', CONFIG, str(workdir), '--num_cpu_devices=2', *ONE_EPOCH]
  )
  assert rc == 0, out[-3000:]
  _assert_shows_the_summary(out, workdir)
  # The console is the log: process 0's lines, each once.
  assert (workdir / 'process_0.log').read_text().splitlines() == [
    line for line in out.splitlines() if not line.startswith('[Gloo]')
  ]
  results = json.loads((workdir / 'results.json').read_text())
  assert (results['num_processes'], results['num_devices']) == (1, 2)


def test_local_sh_names_a_failed_run_and_exits_with_its_code(tmp_path):
  workdir = tmp_path / 'run'
  rc, out = _run(
    ['launch/local.sh', CONFIG, str(workdir), '--config.num_epochs=0']
  )
  error = 'mtl-train: error: num_epochs is 0, expected >= 1'
  assert rc == 2, out[-3000:]
  report = (
    f'launch/local.sh: process 0 exited with 2; its last lines '
    f'({workdir}/process_0.log):'
  )
  lines = out.splitlines()
  assert report in lines, out[-3000:]
  assert lines[lines.index(report) + 1 :] == [error], out[-3000:]


def test_multiprocess_cpu_sh_names_the_process_that_failed(tmp_path):
  # A flag after the script's own overrides them in every process:
  # --num_processes=1 leaves process 0 a valid one-process run, which then
  # waits for nobody, while process 1 (--process_id=1) fails at once.
  workdir = tmp_path / 'run'
  rc, out = _run(
    [
      'launch/multiprocess_cpu.sh',
      '2',
      '2',
      CONFIG,
      str(workdir),
      *ONE_EPOCH,
      '--num_processes=1',
    ]
  )
  assert rc == 2, out[-3000:]
  report = (
    'launch/multiprocess_cpu.sh: process 1 exited with 2; its last lines '
    f'({workdir}/process_1.log):'
  )
  lines = out.splitlines()
  assert report in lines, out[-3000:]
  # Its last lines follow, then nothing (process 0 was killed).
  assert lines[lines.index(report) + 1 :] == [
    'mtl-train: error: --process_id is 1, expected 0..0'
  ], out[-3000:]
  assert 'wait:' not in out and 'no such job' not in out, out[-3000:]


SRUN = """#!/usr/bin/env bash
# srun --kill-on-bad-exit=1 on one machine: SLURM_NTASKS tasks with the
# environment jax.distributed reads (its coordinator port is
# SLURM_JOB_ID % 4096 + 61440, on the step's first node).
while [[ $1 == -* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_STEP_ID=0 SLURM_STEP_NODELIST=localhost SLURM_PROCID=$i \\
    SLURM_LOCALID=$i setsid "$@" &
  pids+=($!)
done
status=0
wait -n "${pids[@]}" || status=$?
if ((status)); then
  echo "srun: error: a task exited with exit code $status" >&2
  for pid in "${pids[@]}"; do kill -9 -- "-$pid" 2>/dev/null; done
fi
wait 2>/dev/null
exit "$status"
"""


def test_slurm_sbatch_names_a_failed_task(tmp_path):
  # The job script's tasks under an emulated srun (2 tasks on this
  # machine): both fail on the config; the first to end is named.
  workdir = tmp_path / 'run'
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'srun').write_text(SRUN)
  (bin_dir / 'srun').chmod(0o755)
  env = _env()
  env.update(
    PATH=f'{bin_dir}:{env["PATH"]}',
    CONFIG=CONFIG,
    WORKDIR=str(workdir),
    SLURM_NTASKS='2',
    SLURM_JOB_ID=str(os.getpid() % 4096),
  )
  rc, out = _run(['launch/slurm.sbatch', '--config.num_epochs=0'], env=env)
  assert rc == 2, out[-3000:]
  lines = out.splitlines()
  reports = [
    i
    for i, line in enumerate(lines)
    if line.startswith('launch/slurm.sbatch: process ')
  ]
  assert reports, out[-3000:]
  # Both tasks fail at once, each reporting from its own wrapper: their
  # lines may interleave, so each report is checked, then the error after.
  for i in reports:
    task = lines[i].split()[2]
    assert lines[i] == (
      f'launch/slurm.sbatch: process {task} exited with 2; its last lines '
      f'({workdir}/process_{task}.log):'
    ), out[-3000:]
  error = 'mtl-train: error: num_epochs is 0, expected >= 1'
  assert error in lines[reports[0] + 1 :], out[-3000:]
  assert 'srun: error: a task exited with exit code 2' in lines, out
  assert 'wait:' not in out and 'no such job' not in out, out[-3000:]


@pytest.mark.parametrize('to', ['launcher', 'process group'])
def test_a_sigterm_to_local_sh_reaches_the_run_which_saves(tmp_path, to):
  # A preemption notice to the launcher alone (the run must get it, not be
  # killed as the launcher exits) or to all its processes, as SLURM sends
  # it (the console's tee must outlive it while the run saves): the run
  # saves and exits 143.
  workdir = tmp_path / 'run'
  log = workdir / 'process_0.log'
  proc = subprocess.Popen(
    ['launch/local.sh', CONFIG, str(workdir), '--config.num_epochs=1000'],
    cwd=REPO,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    start_new_session=True,
  )
  try:
    deadline = time.monotonic() + 120
    while not (log.exists() and 'epoch 1/1000' in log.read_text()):
      assert proc.poll() is None and time.monotonic() < deadline
      time.sleep(0.2)
    if to == 'launcher':
      proc.send_signal(signal.SIGTERM)
    else:
      os.killpg(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, 9)
  assert proc.returncode == 143, out[-3000:]
  assert 'checkpoint saved' in out, out[-3000:]
  assert 'launch/local.sh: process 0 exited with 143;' in out, out[-3000:]
  saved = checkpoint.Checkpointer(workdir / 'checkpoints', read_only=True)
  assert saved.all_steps(), out[-3000:]
  saved.close()


@pytest.mark.slow
def test_a_split_table_over_two_processes_of_four_devices_equals_one_of_eight(
  tmp_path, census_tfds_dir
):
  """Census's one shared table split by rows over 8 devices: 2 processes x
  4 devices (launch/multiprocess_cpu.sh, the lookups' all_to_all across
  processes) against 1 process x 8. Each process holds its own blocks; the
  checkpoints hold the same [8 R, d] blocks."""
  one, two = tmp_path / 'one', tmp_path / 'two'
  flags = [
    '--config.parallel.backend=shard_map',
    "--config.parallel.sharding.rows=('table',)",
    f'--config.dataset.data_dir={census_tfds_dir}',
    '--config.batch_size=1024',
    '--config.eval_batch_size=1024',
    '--config.num_epochs=1',
  ]
  config = 'configs/smoke.py:mmoe,census'
  proc = cli.run(
    [
      f'--config={config}',
      f'--workdir={one}',
      '--num_cpu_devices=8',
      '--config.parallel.num_devices=0',
      '--config.input_mode=host',
      *flags,
    ],
    env=_env(),
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  rc, out = _run(
    ['launch/multiprocess_cpu.sh', '2', '4', config, str(two), *flags],
    timeout=900,
  )
  logs = [(two / f'process_{i}.log').read_text() for i in range(2)]
  assert rc == 0, out[-2000:] + logs[0][-2000:] + logs[1][-2000:]
  _assert_shows_the_summary(out, two)
  assert 'split by rows over 8 devices' in out, out[-2000:]
  want, got = (json.loads((d / 'results.json').read_text()) for d in (one, two))
  assert (got['num_processes'], got['num_devices']) == (2, 8)
  for split in ('validation', 'test'):
    for key, value in want[split].items():
      np.testing.assert_allclose(got[split][key], value, rtol=RTOL, err_msg=key)
  (_, params_a), (_, params_b) = _params(one), _params(two)
  a, b = params_a['embed']['table'], params_b['embed']['table']
  assert a.shape == b.shape and a.shape[0] % 8 == 0
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=RTOL, atol=ATOL)
