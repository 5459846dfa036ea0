"""Every config in configs/ builds, is locked, and names real components."""

import importlib
import pathlib

import pytest

from mtl.core.architectures import ARCHITECTURES
from mtl.core.weighting import WEIGHTINGS
from mtl.data import DATASETS

CONFIGS = sorted(
  p
  for p in (pathlib.Path(__file__).parents[1] / 'configs').glob('*.py')
  if p.stem not in ('__init__', 'common')
)
ARGS = {
  'smoke': [None, 'ple,census', 'single_task,synthetic'],
  'synthetic': [None, 'shared_bottom', 'omoe'],
  'entire_space': [None, 'aitm', 'single_task'],
  'ali_ccp': [None, 'aitm', 'mmoe'],
  'aliexpress': [None, 'aitm', 'ple'],
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
  stems = {p.stem for p in CONFIGS}
  funnel = {n for n, c in ARCHITECTURES.items() if hasattr(c, 'adapt_dataset')}
  assert funnel == {'esmm', 'aitm'}
  # Census has no click -> conversion funnel for ESMM and AITM.
  assert {f'census_{n}' for n in set(ARCHITECTURES) - funnel} <= stems
  for stem in ('entire_space', 'ali_ccp', 'aliexpress'):
    module = importlib.import_module(f'configs.{stem}')
    assert funnel <= set(module.MODELS), stem


def test_smoke_rejects_unknown_argument():
  smoke = next(p for p in CONFIGS if p.stem == 'smoke')
  with pytest.raises(ValueError, match="argument 'mmeo'"):
    _load(smoke, 'mmeo')
