"""experiments/architectures.py's summaries against hand-computed values."""

import json
import math
import pathlib

from experiments import architectures


def test_experts_in_use_is_exp_entropy_of_the_last_gate_row(tmp_path):
  rows = [
    {'step': 1, 'diag/gate/0/a/0': 0.9, 'diag/gate/0/a/1': 0.1},
    {'step': 2, 'train/loss': 1.0},
    # The last row with gates: task a uniform over 2 experts (2.0), task b
    # all on one expert (1.0), task c 0.5/0.25/0.25 (2 ** 1.5).
    {
      'step': 3,
      'diag/gate/0/a/0': 0.5,
      'diag/gate/0/a/1': 0.5,
      'diag/gate/0/b/0': 1.0,
      'diag/gate/0/b/1': 0.0,
      'diag/gate/0/c/0': 0.5,
      'diag/gate/0/c/1': 0.25,
      'diag/gate/0/c/2': 0.25,
    },
  ]
  (tmp_path / 'metrics.jsonl').write_text(
    ''.join(json.dumps(r) + '\n' for r in rows)
  )
  got = architectures.experts_in_use(tmp_path)
  assert math.isclose(got['effective'], (2.0 + 1.0 + 2**1.5) / 3)
  assert math.isclose(got['gated'], (2 + 2 + 3) / 3)


def test_experts_in_use_is_none_without_gates(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "train/loss": 2.0}\n')
  assert architectures.experts_in_use(tmp_path) is None


def test_tasks_of_keeps_the_runs_order_and_headline_metrics():
  test = {
    'test/auc/click': 0.7,
    'test/logloss/click': 0.4,
    'test/mse/watch': 1.2,
    'test/auc/like': 0.8,
  }
  assert architectures.tasks_of({'test': test}) == ['click', 'watch', 'like']


def test_a_model_behind_mmoe_is_worse_and_a_tie_is_said():
  def run(values):
    return {
      'tasks': ['y'],
      'results': [
        {'test': {'test/auc/y': v}, 'num_params': 10} for v in values
      ],
      'experts_in_use': [None] * len(values),
      'scenarios': [],
    }

  runs = {
    'mmoe': run([0.80, 0.81, 0.82]),
    'ple': run([0.70, 0.71, 0.72]),  # 0.1 behind on every seed
    'omoe': run([0.81, 0.80, 0.82]),  # paired differences +0.01, -0.01, 0
    'stem': 'model stem: refused',
  }
  rows = {
    r['model']: r
    for r in architectures.summarize('x', ['mmoe', 'ple', 'omoe', 'stem'], runs)
  }
  assert rows['ple']['tasks']['y']['verdict'] == 'worse'
  assert math.isclose(rows['ple']['tasks']['y']['diff'], -0.1)
  assert rows['omoe']['tasks']['y']['verdict'] == 'tie'
  assert rows['stem'] == {'model': 'stem', 'refused': 'model stem: refused'}
  assert 'verdict' not in rows['mmoe']['tasks']['y']


def test_pepnet_reads_the_scenario_as_its_domain_on_the_scenarios_log(tmp_path):
  config = architectures.config_of('scenarios', 'pepnet', tmp_path)
  assert config.model_name == 'pepnet'
  assert tuple(config.model.domain_features) == ('scenario',)
  assert 'scenario' in config.dataset.features
  other = architectures.config_of('scenarios', 'mmoe', tmp_path)
  assert not other.model.domain_features


def test_each_model_keeps_the_learning_rate_that_validates_best():
  def result(**val):
    return {'test': {'test/auc/a': 0.5, 'test/mse/r': 1.0}, 'validation': val}

  auc = {
    1.0: result(**{'val/auc/a': 0.70}),
    1 / 3: result(**{'val/auc/a': 0.72}),
  }
  auc[3.0] = result(**{'val/auc/a': 0.71})
  assert architectures.best_factor(auc) == 1 / 3
  auc[1 / 3] = result(**{'val/auc/a': 0.70})  # A tie keeps the config's rate.
  auc[3.0] = result(**{'val/auc/a': 0.69})
  assert architectures.best_factor(auc) == 1.0
  # A regression first task: the lowest MSE.
  reg = lambda mse: {  # noqa: E731
    'test': {'test/mse/r': 1.0, 'test/auc/a': 0.5},
    'validation': {'val/mse/r': mse},
  }
  assert (
    architectures.best_factor({1.0: reg(2.0), 1 / 3: reg(3.0), 3.0: reg(1.5)})
    == 3.0
  )
  config = architectures.config_of('census', 'mmoe', None)
  base = config.optimizer.learning_rate
  c, workdir = architectures.job(config, 'mmoe', 3.0, 2, pathlib.Path('w'))
  assert c.optimizer.learning_rate == 3 * base and c.seed == 2
  assert workdir == pathlib.Path(f'w/mmoe_lr{3 * base:g}_seed2')
  c, workdir = architectures.job(config, 'mmoe', 1.0, 0, pathlib.Path('w'))
  assert workdir == pathlib.Path('w/mmoe_seed0')  # The runs before the grid.
  assert config.optimizer.learning_rate == base  # Not changed in place.
