"""validate.py's rules, one by one, in process (the bad-input corpus's
in-process half; its command-line cases: tests/bad_input_corpus.py)."""

import math

import ml_collections
import pytest

from configs import common, smoke
from mtl.errors import ConfigError
from mtl.shell import validate

NAN = float('nan')


def _config(model='mmoe', **overrides):
  """The smoke config with `overrides`, rebuilt as a new ConfigDict so that
  any value is possible (as a library caller may pass)."""
  values = smoke.get_config(model).to_dict()
  for key, value in overrides.items():
    node = values
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return ml_collections.ConfigDict(values)


def _error(**overrides) -> str:
  model = overrides.pop('model', 'mmoe')
  with pytest.raises(ConfigError) as err:
    validate.check_config(_config(model, **overrides))
  text = str(err.value)
  assert '\n' not in text
  return text


RULES = [
  # counts >= 1, intervals >= 0
  ({'steps_per_dispatch': -2}, 'steps_per_dispatch is -2, expected >= 1'),
  ({'checkpoint.every_steps': -1}, 'checkpoint.every_steps is -1, expected'),
  ({'diagnostics_every_steps': -3}, 'diagnostics_every_steps is -3, expe'),
  # types
  ({'batch_size': True}, 'batch_size is True (a bool), expected an int >= 1'),
  ({'seed': None}, 'seed is None (unset), expected an int'),
  ({'select_best': 1}, 'select_best is 1 (an int), expected True or False'),
  ({'wandb.tags': ('a', 3)}, 'wandb.tags[1] is 3 (an int), expected a string'),
  ({'population.seeds': (1, 2.5)}, 'population.seeds[1] is 2.5 (a float)'),
  # finite, ranges of floats
  ({'towers.dropout': NAN}, 'towers.dropout is nan, expected a finite number'),
  ({'towers.dropout': 1.0}, 'towers.dropout is 1.0, expected a number in'),
  ({'optimizer.learning_rate': -math.inf}, 'is -inf, expected a finite'),
  (
    {'population.learning_rates': (0.1, -1.0)},
    'population.learning_rates[1] is -1.0, expected > 0',
  ),
  (
    {'population.task_weights': ((1.0, -1.0),)},
    'population.task_weights[0][1] is -1.0, expected >= 0',
  ),
  ({'population.task_weights': ((),)}, 'population.task_weights[0] is ()'),
  # enumerations
  ({'optimizer.name': 'adan'}, "optimizer.name 'adan' is not one of adam"),
  ({'input_mode': 'gpu'}, "unknown input_mode 'gpu'"),
  ({'model_name': 3}, 'model_name is 3 (an int), expected a string'),
  # keywords: names and types from the signature
  ({'model.num_experts': -1}, 'model.num_experts is -1, expected >= 1'),
  ({'model.expert_hidden': [8, 'a']}, "model.expert_hidden[1] is 'a'"),
  ({'model.dropout': -0.5}, 'model.dropout is -0.5, expected a number in'),
  (
    {'model': 'ple', 'model.num_shared_experts': -1},
    'model.num_shared_experts is -1, expected >= 0',
  ),
  (
    {'weighting_name': 'gradnorm', 'weighting.gradnorm.learning_rate': 0.0},
    'weighting.gradnorm.learning_rate is 0.0, expected a number > 0',
  ),
  (
    {'weighting_name': 'nash_mtl', 'weighting.nash_mtl.max_iterations': 0},
    'weighting.nash_mtl.max_iterations is 0, expected >= 1',
  ),
  (
    {'weighting_name': 'mgda', 'weighting.mgda.normalization': 'l3'},
    'weighting.mgda.normalization is',
  ),
  (
    {'weighting_name': 'fixed', 'weighting.fixed.weights': (1.0, 'x')},
    "weighting.fixed.weights[1] is 'x' (a string), expected a number",
  ),
  ({'dataset.n_train': 1.5}, 'dataset.n_train is 1.5 (a float), expected an'),
  # across keys
  ({'init_from': '/no/such/run'}, 'init_from /no/such/run holds no'),
]


@pytest.mark.parametrize('overrides,message', RULES)
def test_rule(overrides, message):
  assert message in _error(**overrides)


def test_unused_entries_are_not_checked():
  """Another architecture's or method's keywords are unused: not checked."""
  validate.check_config(
    _config(
      **{
        'model.num_levels': 0,  # PLE's, on MMoE
        'model.hidden': (),  # Shared-Bottom's
        'weighting.gradnorm.alpha': -1.0,  # the method is 'equal'
      }
    )
  )


def test_cgc_may_have_one_kind_of_expert():
  validate.check_config(_config('cgc', **{'model.num_specific_experts': 0}))


def test_every_config_of_the_repository_passes():
  from configs import ali_ccp as ali_config
  from configs import census, entire_space, synthetic

  for name in smoke.SIZES:
    validate.check_config(smoke.get_config(name))
  for module in (census, entire_space, synthetic):
    validate.check_config(module.get_config())
  for model in ali_config.MODELS:
    validate.check_config(ali_config.get_config(model))


def test_every_key_of_common_has_a_rule():
  """A key added to configs/common.py needs a rule here (or is a name or a
  component section checked from signatures)."""

  def leaves(node, prefix=''):
    for key, value in node.items():
      if hasattr(value, 'items'):
        yield from leaves(value, f'{prefix}{key}.')
      else:
        yield prefix + key

  unchecked = [
    key
    for key in leaves(common.base_config())
    if key not in validate._FIXED
    and key not in validate.NAMED
    and key != 'parallel.backend'
    and not key.startswith(tuple(s + '.' for s in validate.SECTIONS))
  ]
  assert unchecked == []
