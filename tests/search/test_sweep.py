"""A small ablation sweep, W&B offline, every member's run read back.

Oracle: each member's results.json (written by the run) against its W&B run
read back from disk, and the summary's mean/std against numpy over those
results.
"""

import csv
import json
import pathlib

import numpy as np
import pytest

from mtl.search import sweep as sweep_lib
from mtl.shell.writers import read_offline_run
from tests import cli

REPO = pathlib.Path(__file__).resolve().parents[2]

SWEEP = """
def get_sweep():
  return dict(
    name='tiny',
    configs=[
      'configs/smoke.py:mmoe,census',
      'configs/smoke.py:shared_bottom,census',
    ],
    grid={'weighting_name': ['equal', 'uncertainty']},
    seeds=[0, 1],
    overrides={
      'num_epochs': 1, 'batch_size': 8192, 'eval_batch_size': 16384,
      'optimizer.learning_rate': 1e-2,
      'steps_per_dispatch': 24, 'log_every_steps': 24,
      'wandb.mode': 'offline', 'checkpoint.async_save': False,
    },
    metric='val/auc/income',
  )
"""


def run_cli(*args):
  env = cli.one_device_env()
  return cli.run(args, env=env, timeout=900, module='mtl.search.sweep')


# The run test sweeps one config (2 cells of 2 seeds; each cell trains census
# for an epoch), the export test both. An epoch is 24 steps of 8192 rows: one
# dispatch of 24 compiles one scan (16 and 8 compiled two).
RUN_SWEEP = SWEEP.replace(
  "      'configs/smoke.py:shared_bottom,census',\n", ''
)


@pytest.mark.slow
def test_sweep_writes_grouped_wandb_runs_and_a_summary(tmp_path, data_dir):
  sweep_file = tmp_path / 'tiny.py'
  sweep_file.write_text(RUN_SWEEP)
  proc = run_cli(f'--sweep={sweep_file}', f'--root={tmp_path}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  base = tmp_path / 'tiny'
  cells = sweep_lib.cells(sweep_lib.load_sweep(sweep_file))
  assert len(cells) == 2
  with (base / 'summary.csv').open() as f:
    summary = {r['cell']: r for r in csv.DictReader(f)}
  assert set(summary) == {c['name'] for c in cells}
  for cell in cells:
    members = json.loads((base / cell['name'] / 'results.json').read_text())[
      'members'
    ]
    assert [m['seed'] for m in members] == [0, 1]
    assert {m['weighting_name'] for m in members} == {
      cell['values']['weighting_name']
    }
    for m in members:
      mdir = base / cell['name'] / 'members' / m['member']
      (run_dir,) = sorted((mdir / 'wandb').glob('offline-run-*'))
      run = read_offline_run(run_dir)
      assert run['group'] == f'tiny/{cell["name"]}'
      assert 'tiny' in run['tags'] and m['model_name'] in run['tags']
      assert run['config']['seed'] == m['seed']
      assert run['config']['weighting_name'] == m['weighting_name']
      for task in ('income', 'marital'):
        key = f'test/auc/{task}'
        assert run['summary'][key] == pytest.approx(m['test'][key])
        assert 0.5 < m['test'][key] <= 1.0
    for task in ('income', 'marital'):
      values = [m['test'][f'test/auc/{task}'] for m in members]
      row = summary[cell['name']]
      assert float(row[f'test/auc/{task}_mean']) == pytest.approx(
        np.mean(values)
      )
      assert float(row[f'test/auc/{task}_std']) == pytest.approx(
        np.std(values, ddof=1)
      )
  table = (base / 'summary.md').read_text()
  assert '| mmoe | equal | 2 |' in table
  assert '| mmoe | uncertainty | 2 |' in table

  # A rerun finds every cell finished and only rewrites the summary.
  before = {p: p.stat().st_mtime for p in base.glob('*/results.json')}
  proc = run_cli(f'--sweep={sweep_file}', f'--root={tmp_path}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert before == {p: p.stat().st_mtime for p in base.glob('*/results.json')}


def test_wandb_sweep_export(tmp_path):
  sweep_file = tmp_path / 'tiny.py'
  sweep_file.write_text(SWEEP)
  proc = run_cli(
    f'--sweep={sweep_file}', f'--root={tmp_path}', '--export_wandb'
  )
  assert proc.returncode == 0, proc.stderr
  text = (tmp_path / 'tiny' / 'wandb_sweep.yaml').read_text()
  assert 'method: grid' in text and 'name: val/auc/income' in text
  assert 'config.weighting_name:\n    values: ["equal", "uncertainty"]' in text
  assert 'config.seed:\n    values: [0, 1]' in text
  assert '${args}' in text and '$WANDB_RUN_ID' in text


@pytest.mark.parametrize(
  'body,message',
  [
    (
      'def get_sweep():\n  return dict(name="x", configs=[])\n',
      "missing ['seeds']",
    ),
    (
      'def get_sweep():\n  return dict(name="x", configs=["c"], '
      'seeds=[0], grd={})\n',
      "unknown ['grd']",
    ),
    (
      'def get_sweep():\n  return dict(name="x", configs=["c"], seeds=[0], '
      'grid={"seed": "abc"})\n',
      "grid['seed'] is 'abc', expected a non-empty list",
    ),
  ],
)
def test_bad_sweep_files(tmp_path, body, message):
  path = tmp_path / 'bad.py'
  path.write_text(body)
  with pytest.raises(ValueError) as e:
    sweep_lib.load_sweep(path)
  assert message in str(e.value) and '\n' not in str(e.value)
