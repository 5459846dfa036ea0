"""Every setting means the same for a single run and for a population.

Oracle: the single run. A population of one member with the run's seed
(`population.seeds=(seed,)`) goes through the population engine (a stacked,
vmapped state) and must give the single run's numbers, metrics rows,
checkpoint steps and results schema, whatever the setting. Numbers agree to
float32 rounding (rel 1e-5): the vmapped program may sum a batched matmul
in another order than the single one; keys and steps agree exactly.
"""

import json
import pathlib

import pytest

from configs import smoke
from mtl.errors import ConfigError
from mtl.shell import trainer


def _config(**overrides):
  c = smoke.get_config()
  c.checkpoint.async_save = False
  c.checkpoint.max_to_keep = 50
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def _rows(path: pathlib.Path):
  return [json.loads(x) for x in path.read_text().splitlines()]


def _steps(workdir: pathlib.Path, name='checkpoints'):
  return sorted(
    int(d.name) for d in (workdir / name).iterdir() if d.name.isdigit()
  )


def _both(tmp_path, **overrides):
  single_dir, pop_dir = tmp_path / 'single', tmp_path / 'pop'
  single = trainer.train(_config(**overrides), single_dir)
  c = _config(**overrides)
  c.population.seeds = (c.seed,)
  pop = trainer.train(c, pop_dir)
  (member,) = pop['members']
  member_dir = pop_dir / 'members' / member['member']
  return single, member, single_dir, member_dir, pop_dir


SETTINGS = {
  'input_mode': {'input_mode': 'host'},
  'steps_per_dispatch': {'steps_per_dispatch': 3},
  'log_every_steps': {'log_every_steps': 3},
  'diagnostics_every_steps': {'diagnostics_every_steps': 2},
  'checkpoint.every_steps': {'checkpoint.every_steps': 5},
  'eval_every_epochs': {'num_epochs': 3, 'eval_every_epochs': 2},
  'select_best': {'select_best': False},
  'skip_nonfinite': {'skip_nonfinite': True},
  'weighting': {'weighting_name': 'gradnorm'},
}


@pytest.mark.parametrize('setting', sorted(SETTINGS))
def test_setting_acts_identically(tmp_path, setting):
  single, member, sdir, mdir, pdir = _both(tmp_path, **SETTINGS[setting])
  for split in ('validation', 'test'):
    assert member[split] == pytest.approx(single[split], rel=1e-5)
  assert member['selected_epoch'] == single['selected_epoch']
  assert set(member) == set(single)  # One results schema.
  m_rows, s_rows = _rows(mdir / 'metrics.jsonl'), _rows(sdir / 'metrics.jsonl')
  assert [sorted(r) for r in m_rows] == [sorted(r) for r in s_rows]
  for a, b in zip(m_rows, s_rows, strict=True):
    assert a == pytest.approx(b, rel=1e-5)
  assert _steps(pdir) == _steps(sdir)
  assert _steps(pdir, 'checkpoints_best') == _steps(sdir, 'checkpoints_best')


def test_init_from_acts_identically(tmp_path):
  # The source is also the cold run: the same config without init_from (one
  # training fewer than a separate source and cold run).
  source = tmp_path / 'source'
  cold = trainer.train(_config(), source)
  single, member, *_ = _both(tmp_path, init_from=str(source))
  assert member['test'] == pytest.approx(single['test'], rel=1e-5)
  assert cold['test'] != single['test']  # The warm start mattered.


@pytest.mark.parametrize(
  'key,value,message',
  [
    ('checkpoint.every_steps', -1, 'checkpoint.every_steps is -1'),
    ('diagnostics_every_steps', -2, 'diagnostics_every_steps is -2'),
    ('eval_every_epochs', 0, 'eval_every_epochs is 0'),
    ('log_every_steps', 0, 'log_every_steps is 0'),
  ],
)
@pytest.mark.parametrize('population', [False, True])
def test_bad_setting_fails_alike(tmp_path, key, value, message, population):
  c = _config(**{key: value})
  if population:
    c.population.size = 2
  with pytest.raises(ConfigError, match=message):
    trainer.train(c, tmp_path / 'w')
  assert not (tmp_path / 'w' / 'checkpoints').exists()
