"""Population training: each member equals the single run it stands for.

Oracle: ordinary single runs (`trainer.train`) of the member's
config. A member differing only by seed must match its single run exactly;
one with another learning rate or task weights to float rounding (its update
is the base update times lr / lr_base, which rounds differently).
"""

import json
import pathlib
import shutil

import numpy as np
import pytest

from configs import smoke
from mtl.shell import trainer
from mtl.shell.writers import read_offline_run


def one_epoch():
  """The smoke run in one epoch of 8 steps, 4 of them logged (the log is
  written once a dispatch: 2 steps each): members are compared with such
  runs step by step, so a second epoch would only repeat that."""
  c = smoke.get_config()
  c.num_epochs, c.steps_per_dispatch = 1, 2
  c.checkpoint.async_save = False
  return c


def config(**population):
  c = one_epoch()
  with c.unlocked():
    for k, v in population.items():
      c.population[k] = v
  return c


def rows(path: pathlib.Path, prefix: str):
  out = []
  for line in path.read_text().splitlines():
    row = json.loads(line)
    out.append({k: v for k, v in row.items() if k.startswith(prefix)})
  return [r for r in out if r]


@pytest.mark.slow
def test_members_match_single_runs(tmp_path):
  c = config(
    seeds=(0, 3, 3),
    learning_rates=(2e-3, 2e-3, 1e-2),
    task_weights=((1.0, 1.0), (1.0, 1.0), (0.5, 2.0)),
  )
  pop = trainer.train(c, tmp_path / 'pop')
  assert [m['seed'] for m in pop['members']] == [0, 3, 3]

  singles = []
  for seed, lr, weights in (
    (0, 2e-3, None),
    (3, 2e-3, None),
    (3, 1e-2, (0.5, 2.0)),
  ):
    s = one_epoch()
    s.seed, s.optimizer.learning_rate = seed, lr
    if weights:
      s.weighting_name = 'fixed'
      s.weighting.fixed.weights = weights
    singles.append(trainer.train(s, tmp_path / f'single_{seed}_{lr}'))

  for j, (member, single) in enumerate(
    zip(pop['members'], singles, strict=True)
  ):
    exact = j < 2
    for split in ('validation', 'test'):
      for key, value in single[split].items():
        got = member[split][key]
        if exact:
          assert got == value, (member['member'], key)
        else:
          assert got == pytest.approx(value, rel=1e-4), (member['member'], key)
    mdir = tmp_path / 'pop' / 'members' / member['member']
    sdir = tmp_path / f'single_{member["seed"]}_{member["learning_rate"]}'
    m_rows = rows(mdir / 'metrics.jsonl', 'train/loss/')
    s_rows = rows(sdir / 'metrics.jsonl', 'train/loss/')
    assert len(m_rows) == len(s_rows) > 2
    for a, b in zip(m_rows, s_rows, strict=True):
      for k in b:
        assert a[k] == (b[k] if exact else pytest.approx(b[k], rel=1e-4))
  # Different seeds and learning rates give different models.
  a, b, _ = pop['members']
  assert a['test'] != b['test']


def test_balancing_hyperparameters_per_member(tmp_path):
  c = config(weighting={'learning_rate': (1e-2, 0.2)})
  c.weighting_name = 'uncertainty'
  c.population.seeds = (1,)
  pop = trainer.train(c, tmp_path / 'pop')
  for member, lr in zip(pop['members'], (1e-2, 0.2), strict=True):
    assert member['weighting']['learning_rate'] == lr
    s = one_epoch()
    s.seed, s.weighting_name = 1, 'uncertainty'
    s.weighting.uncertainty.learning_rate = lr
    single = trainer.train(s, tmp_path / f'single_{lr}')
    for key, value in single['test'].items():
      assert member['test'][key] == pytest.approx(value, rel=1e-5)
    # The learned log-variances moved at each member's own rate.
    mdir = tmp_path / 'pop' / 'members' / member['member']
    w_member = rows(mdir / 'metrics.jsonl', 'train/weight/')[-1]
    w_single = rows(
      tmp_path / f'single_{lr}' / 'metrics.jsonl', 'train/weight/'
    )
    for k, v in w_single[-1].items():
      assert w_member[k] == pytest.approx(v, rel=1e-5)
  w = [
    rows(tmp_path / 'pop/members' / m['member'] / 'metrics.jsonl', 'train/w')
    for m in pop['members']
  ]
  assert w[0][-1] != w[1][-1]


def test_resume_is_exact(tmp_path):
  c = config(size=2)
  c.num_epochs = 2  # Resumed at the first epoch's end.
  c.checkpoint.every_steps = 4
  c.checkpoint.max_to_keep = 10
  straight = trainer.train(c, tmp_path / 'straight')
  # A run that died after step 8: its later checkpoints never got written.
  work = tmp_path / 'resumed'
  trainer.train(c, work)
  for d in (work / 'checkpoints').iterdir():
    if d.name.isdigit() and int(d.name) > 8:
      shutil.rmtree(d)
  (work / 'results.json').unlink()
  resumed = trainer.train(c, work)
  for a, b in zip(straight['members'], resumed['members'], strict=True):
    assert b['resumed_from_step'] == 8
    assert a['test'] == b['test'] and a['validation'] == b['validation']
    m = 'members/' + a['member'] + '/metrics.jsonl'
    assert (tmp_path / 'straight' / m).read_text() == (work / m).read_text()


def test_one_wandb_run_per_member_read_back(tmp_path):
  c = config(size=2)
  c.wandb.mode = 'offline'
  c.wandb.group = 'pop-group'
  pop = trainer.train(c, tmp_path / 'pop')
  for member in pop['members']:
    mdir = tmp_path / 'pop' / 'members' / member['member']
    (run_dir,) = sorted((mdir / 'wandb').glob('offline-run-*'))
    run = read_offline_run(run_dir)
    assert run['group'] == 'pop-group'
    assert run['name'] == member['member']
    assert 'population' in run['tags']
    assert run['config']['seed'] == member['seed']
    assert run['exit_code'] == 0
    for key, value in member['test'].items():
      assert run['summary'][key] == pytest.approx(value)


@pytest.mark.parametrize(
  'change,message',
  [
    (
      lambda c: c.population.update(seeds=(1, 2), learning_rates=(1e-3,) * 3),
      'population lists disagree on the number of members (seeds 2, '
      'learning_rates 3)',
    ),
    (
      lambda c: c.population.update(size=2, seeds=(1, 2, 3)),
      'population.seeds has 3 values, expected 2 (one per member) or 1',
    ),
    (
      lambda c: c.population.update(size=2, task_weights=((1.0,), (1.0,))),
      'population.task_weights[0] has 1 weights, expected 2',
    ),
    (
      lambda c: c.population.weighting.update(alpha=(1.0, 2.0)),
      "population.weighting.alpha: 'equal' has no such hyper-parameter",
    ),
    (
      lambda c: c.parallel.update(num_devices=2) or c.population.update(size=2),
      'parallel.num_devices is 2 with a population (1 process(es)), expected 1',
    ),
    (
      lambda c: c.population.update(learning_rates=(1e-3, -1.0)),
      'population.learning_rates[1] is -1.0, expected > 0',
    ),
  ],
)
def test_bad_population_configs(tmp_path, change, message):
  c = config()
  with c.unlocked():
    change(c)
  with pytest.raises(ValueError, match=None) as e:
    trainer.train(c, tmp_path / 'w')
  assert message in str(e.value)
  assert '\n' not in str(e.value)
  assert not (tmp_path / 'w' / 'checkpoints').exists()


def test_population_metrics_are_per_member(tmp_path):
  c = config(seeds=(0, 1))
  pop = trainer.train(c, tmp_path / 'pop')
  assert pop['population_size'] == 2
  assert pop['train_examples_per_s'] > 0
  first = [
    np.array(
      list(
        rows(
          tmp_path / 'pop/members' / m['member'] / 'metrics.jsonl',
          'train/loss/',
        )[0].values()
      )
    )
    for m in pop['members']
  ]
  assert not np.allclose(first[0], first[1])
