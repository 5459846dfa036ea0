"""Every config in configs/ builds, is locked, and names real components."""

import dataclasses
import importlib
import inspect
import pathlib

import ml_collections
import pytest

from configs import census, common
from mtl.core.architectures import ARCHITECTURES
from mtl.core.architectures.base import Backbone
from mtl.core.architectures.two_tower import TwoTower
from mtl.core.weighting import WEIGHTINGS
from mtl.data import DATASETS
from mtl.errors import ConfigError
from mtl.shell import keywords

CONFIGS = sorted(
  p
  for p in (pathlib.Path(__file__).parents[1] / 'configs').glob('*.py')
  if p.stem not in ('__init__', 'common')
)
ARGS = {
  'smoke': [None, 'ple,census', 'single_task,synthetic'],
  'census': [None, 'ple', 'single_task', 'cgc'],
  'synthetic': [None, 'shared_bottom', 'omoe'],
  'entire_space': [None, 'aitm', 'single_task'],
  'ali_ccp': [None, 'aitm', 'mmoe'],
  'aliexpress': [None, 'aitm', 'ple'],
  'kuairand': [None, 'mmoe,plain', 'ple,counts+dcn+mean'],
  'movielens_table': [None, 'mmoe,plain', 'shared_bottom,counts+fm'],
}


def _load(path, arg):
  module = importlib.import_module(f'configs.{path.stem}')
  return module.get_config() if arg is None else module.get_config(arg)


@pytest.mark.parametrize(
  'path,arg',
  [(p, a) for p in CONFIGS for a in ARGS.get(p.stem, [None])],
  ids=lambda v: getattr(v, 'stem', str(v)),
)
def test_config_builds_and_names_known_components(path, arg):
  config = _load(path, arg)
  assert config.model_name in ARCHITECTURES
  assert config.dataset_name in DATASETS
  assert config.weighting_name in WEIGHTINGS
  assert set(config.weighting.keys()) == set(WEIGHTINGS)
  with pytest.raises(AttributeError, match='Did you mean'):
    config.bach_size = 10  # Locked: a typo is an error, with a suggestion.
  assert path.read_text().count('mtl-train') >= 1, 'docstring shows the command'


def test_configs_cover_every_architecture():
  funnel = {
    n
    for n, c in ARCHITECTURES.items()
    if c.adapt_dataset is not Backbone.adapt_dataset
  }
  assert funnel == {'esmm', 'aitm'}
  towers = {n for n, c in ARCHITECTURES.items() if issubclass(c, TwoTower)}
  assert towers == {'two_tower', 'two_tower_mmoe'}
  # PEPNet reads features by name too, any features: census runs it.
  by_name = {n for n, c in ARCHITECTURES.items() if c.input_layout}
  assert by_name == towers | {'pepnet'}
  # Census has no click -> conversion funnel for ESMM and AITM and no items
  # for the two towers; every other architecture runs from
  # configs/census.py:<name>, with no file of its own.
  assert census.census_models() == sorted(set(ARCHITECTURES) - funnel - towers)
  with pytest.raises(ConfigError, match="model 'two_tower', expected one of"):
    census.get_config('two_tower')
  for name in census.census_models():
    config = census.get_config(name)
    assert config.model_name == name
  for stem in ('entire_space', 'ali_ccp', 'aliexpress'):
    module = importlib.import_module(f'configs.{stem}')
    assert funnel <= set(module.MODELS), stem


def test_census_rejects_a_funnel_model():
  with pytest.raises(ConfigError, match="model 'esmm', expected one of"):
    census.get_config('esmm')


def test_defaults_come_from_the_signatures():
  config = common.base_config('mmoe', 'census_income')
  for name, loader in DATASETS.items():
    params = inspect.signature(loader).parameters
    entries = common.base_config('mmoe', name).dataset
    assert set(entries) == set(params), name
    for key, value in entries.items():
      default = params[key].default
      if isinstance(value, ml_collections.ConfigDict):
        # A ConfigDict compares its type and locking too: the contents.
        value = value.to_dict()
      assert value == default, (name, key)
  for name, method in WEIGHTINGS.items():
    params = inspect.signature(method).parameters
    entries = config.weighting[name]
    assert set(entries) == set(params), name
    for key, value in entries.items():
      default = params[key].default
      assert value == (tuple(default) if isinstance(default, list) else default)
  # model: every architecture's keywords, unset until a run resolves them.
  for arch in ARCHITECTURES.values():
    fields = {f.name for f in dataclasses.fields(arch) if f.init}
    assert fields - {'num_tasks', 'parent', 'name'} <= set(config.model)
  assert all(v is None for v in config.model.values())


def test_resolve_model_fills_the_signature_defaults_and_ignores_others():
  config = census.get_config('mmoe')
  config.model.num_levels = 3  # A PLE keyword, set on an MMoE run.
  kwargs = keywords.resolve_model(config, ARCHITECTURES)
  assert kwargs == {'num_experts': 8, 'expert_hidden': (64,), 'dropout': 0.0}
  assert config.model.num_experts == 8  # Recorded for config.json.
  config.model_name = 'ple'
  kwargs = keywords.resolve_model(config, ARCHITECTURES)
  assert kwargs['num_levels'] == 3 and kwargs['num_shared_experts'] == 2
  assert 'num_experts' not in kwargs


def test_smoke_rejects_unknown_argument():
  smoke = next(p for p in CONFIGS if p.stem == 'smoke')
  with pytest.raises(ValueError, match="argument 'mmeo'"):
    _load(smoke, 'mmeo')


@pytest.mark.parametrize('stem', ['kuairand', 'movielens_table', 'census'])
def test_real_data_parts(stem):
  module = importlib.import_module(f'configs.{stem}')
  plain = module.get_config('mmoe,plain')
  base = common.base_config('mmoe', plain.dataset_name)
  # 'plain' is the model alone: every part's key at its default.
  assert plain.wide.enabled is False and plain.interaction == 'none'
  assert plain.select_best == base.select_best
  assert plain.optimizer.wide.name == 'same'
  assert plain.optimizer.embedding_l2 == 0.0
  assert plain.task_loss.pos_weight == ()
  assert plain.numeric.embedding == 'none' and plain.weighting_name == 'equal'
  full = module.get_config('mmoe,ftrl+dcn+per_task+l2+long+plr')
  assert full.wide.enabled and full.optimizer.wide.name == 'ftrl'
  assert full.interaction == 'dcn_v2' and full.select_best == 'per_task'
  assert full.optimizer.embedding_l2 == 1e-4
  assert full.num_epochs == plain.num_epochs * 3 // 2
  assert full.numeric.to_dict() == common.PLR
  if getattr(module, 'TASK_WEIGHTS', None) is None:
    with pytest.raises(ConfigError, match="part 'weights', but this config"):
      module.get_config('mmoe,weights')
  else:
    weighted = module.get_config('mmoe,weights')
    assert weighted.weighting_name == 'fixed'
    assert weighted.weighting.fixed.weights == module.TASK_WEIGHTS
  with pytest.raises(ConfigError, match="part 'widee' of argument"):
    module.get_config('mmoe,widee')
  with pytest.raises(ConfigError, match="model 'mmo', expected one of"):
    module.get_config('mmo')


def test_counts_add_count_features_and_rare_weights():
  from configs import kuairand

  plain = kuairand.get_config('mmoe,plain').dataset.features
  counted = kuairand.get_config('mmoe,counts+rare')
  added = set(counted.dataset.features) - set(plain)
  assert added == {'user_rates', 'video_rates'}
  for name in added:
    assert counted.dataset.features[name].kind == 'count'
  assert dict(counted.task_loss.pos_weight) == {'comment': 10.0, 'follow': 10.0}
  # The default is the combination chosen on validation.
  assert (
    kuairand.get_config().to_dict()
    == kuairand.get_config(f'mmoe,{kuairand.DEFAULT_PARTS}').to_dict()
  )
  for part in ('counts', 'user_rates'):
    with pytest.raises(ConfigError, match="no 'counts' or 'user_rates' part"):
      census.get_config(f'mmoe,{part}')
  # Census: the bare file is the validation-best; 'mmoe' the paper's setup.
  assert (
    census.get_config().to_dict()
    == census.get_config(f'mmoe,{census.DEFAULT_PARTS}').to_dict()
  )
  assert census.get_config().numeric.embedding == 'periodic'


def test_user_rates_counts_the_items_and_rates_the_users_only():
  from configs import movielens_table

  features = movielens_table.get_config('mmoe,user_rates').dataset.features
  assert features['user_rates'].labels == movielens_table.COUNTED
  assert features['item_rates'].kind == 'count'
  assert features['item_rates'].labels == ()
  full = movielens_table.get_config('mmoe,counts').dataset.features
  assert full['item_rates'].labels == movielens_table.COUNTED
  assert (
    'item_rates'
    not in movielens_table.get_config('mmoe,plain').dataset.features
  )
  assert (
    movielens_table.get_config().to_dict()
    == movielens_table.get_config(
      f'mmoe,{movielens_table.DEFAULT_PARTS}'
    ).to_dict()
  )
  assert census.get_config('mmoe').numeric.embedding == 'none'
