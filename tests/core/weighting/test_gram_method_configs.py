"""FairGrad's, UPGrad's and Aligned-MTL's config keys: a value out of range
is one ConfigError line naming the config key, the value and what was
expected (mtl.shell.validate), and their defaults are the papers' codes'."""

import inspect

import pytest

from mtl.core.weighting import WEIGHTINGS
from mtl.shell import validate
from tests.shell.test_validate_rules import _config, _error


@pytest.mark.parametrize(
  'name, key, value, message',
  [
    ('fairgrad', 'alpha', 0.0, 'weighting.fairgrad.alpha is 0.0, expected'),
    ('fairgrad', 'max_iterations', 0, 'weighting.fairgrad.max_iterations'),
    ('upgrad', 'reg_eps', -1.0, 'weighting.upgrad.reg_eps is -1.0, expected'),
    ('upgrad', 'norm_eps', -1.0, 'weighting.upgrad.norm_eps is -1.0'),
  ],
)
def test_out_of_range_is_one_line_naming_the_key(name, key, value, message):
  text = _error(**{'weighting_name': name, f'weighting.{name}.{key}': value})
  assert message in text


def test_defaults_are_the_released_codes_and_validate():
  # FairGrad: LibMTL's FairGrad_alpha = 1.0; UPGrad: torchjd's norm_eps =
  # reg_eps = 1e-4; Aligned-MTL has none.
  def defaults(name):
    params = inspect.signature(WEIGHTINGS[name]).parameters
    return {k: p.default for k, p in params.items()}

  assert defaults('fairgrad') == {'alpha': 1.0, 'max_iterations': 100}
  assert defaults('upgrad') == {'norm_eps': 1e-4, 'reg_eps': 1e-4}
  assert defaults('aligned_mtl') == {}
  for name in ('fairgrad', 'upgrad', 'aligned_mtl'):
    validate.check_config(_config(weighting_name=name))
