"""The multi-host path end to end: launch/multiprocess_cpu.sh starts 2
processes x 2 emulated CPU devices joined by jax.distributed; the run must
equal one process with 4 devices, and only process 0 may write."""

import json
import os
import pathlib
import subprocess
import sys

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


def _run(cmd, timeout=240):
  # jax.distributed catches SIGTERM: a hang is ended with SIGKILL.
  proc = subprocess.Popen(
    cmd,
    cwd=REPO,
    env=_env(),
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


def _params(workdir):
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', read_only=True)
  step = ckpt.all_steps()[-1]
  # Saved over 4 devices; read back onto one, whatever this process has.
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
    ckpt._saved_tree(step),
  )
  tree = ckpt.read_tree(step, target)
  ckpt.close()
  return step, tree['params']


def _metrics(workdir):
  return [
    json.loads(line)
    for line in (workdir / 'metrics.jsonl').read_text().splitlines()
  ]


@pytest.mark.parametrize('backend', ['pmap', 'shard_map'])
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
