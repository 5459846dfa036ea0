"""experiments/architectures.py's summaries against hand-computed values."""

import json
import math

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
