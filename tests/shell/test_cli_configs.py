"""Choosing components from the command line, as the README shows.

Each test runs `python -m mtl.shell.main` in a subprocess and checks what the
run recorded against what the command asked for (and, for populations,
against the members' own configs).
"""

import json
import pathlib

import pytest

from tests import cli

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(workdir, *args, data_dir=None):
  # A census epoch executes more than it compiles: XLA's default level.
  env = cli.one_device_env(optimized=data_dir is not None, JAX_PLATFORMS='cpu')
  args = [f'--workdir={workdir}', *args]
  if data_dir is not None:
    args.append(f'--config.dataset.data_dir={data_dir}')
  proc = cli.run(args, env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads((pathlib.Path(workdir) / 'results.json').read_text())


@pytest.fixture(scope='module')
def census_dir(census_tfds_dir):
  return census_tfds_dir


SHORT = ['--config.num_epochs=1', '--config.progress_bar=false']


@pytest.mark.slow
def test_census_config_takes_any_architecture(tmp_path, census_dir):
  r = _run(
    tmp_path / 'w',
    '--config=configs/census.py:ple',
    *SHORT,
    data_dir=census_dir,
  )
  assert r['model_name'] == 'ple'
  # PLE's own signature defaults (mtl/core/architectures/ple.py).
  assert r['model'] == {
    'num_levels': 2,
    'num_specific_experts': 3,
    'num_shared_experts': 2,
    'expert_hidden': [64],
    'dropout': 0.0,
  }
  assert r['test']['test/auc/income'] > 0.9  # It trained on census.


def test_model_name_switches_on_the_mmoe_config(tmp_path, census_dir):
  r = _run(
    tmp_path / 'w',
    '--config=configs/census_mmoe.py',
    '--config.model_name=ple',
    '--config.model.num_levels=1',
    *SHORT,
    # The assertions read the resolved config only: a small, fast model.
    '--config.batch_size=8192',
    '--config.eval_batch_size=16384',
    '--config.model.expert_hidden=(8,)',
    '--config.towers.hidden=(8,)',
    data_dir=census_dir,
  )
  assert r['model_name'] == 'ple' and r['model']['num_levels'] == 1
  assert 'num_experts' not in r['model']  # MMoE's keyword is not passed on.
  recorded = json.loads((tmp_path / 'w' / 'config.json').read_text())
  assert recorded['model_name'] == 'ple'
  assert recorded['model']['num_levels'] == 1


def test_population_weighting_from_the_command_line(tmp_path):
  r = _run(
    tmp_path / 'w',
    '--config=configs/smoke.py',
    '--config.weighting_name=uncertainty',
    '--config.population.weighting.learning_rate=(0.01,0.2)',
    '--config.num_epochs=1',
  )
  assert r['population_size'] == 2
  lrs = [m['weighting']['learning_rate'] for m in r['members']]
  assert lrs == [0.01, 0.2]
  for m in r['members']:
    member_dir = tmp_path / 'w' / 'members' / m['member']
    cfg = json.loads((member_dir / 'config.json').read_text())
    assert cfg['weighting']['uncertainty'] == m['weighting']
  assert r['members'][0]['test'] != r['members'][1]['test']
