"""The model's rules across config keys, before any data is read (shell
code; validate.check_config asks).

- Two towers: both feature lists set and disjoint (two_tower.check_features
  without a layout; which features exist is checked when the model sees
  the data); the bilinear and dot forms are exact only with
  towers.hidden = () (two_tower.py); they take neither wide.enabled nor an
  interaction, since their score factors into the towers' embeddings.
- wide.crosses are pairs (their names are checked when the model sees the
  data: wide.cross_columns).
"""

import dataclasses

from mtl.core.architectures import ARCHITECTURES, two_tower
from mtl.errors import ConfigError
from mtl.shell.config_rules import get


def _is_two_tower(config) -> bool:
  return issubclass(ARCHITECTURES[config.model_name], two_tower.TwoTower)


def check_two_tower(config) -> None:
  """Two towers: their features (two_tower.check_features) and a head
  exact for the interaction."""
  if not _is_two_tower(config):
    return
  two_tower.check_features(
    tuple(get(config, 'model.user_features') or ()),
    tuple(get(config, 'model.item_features') or ()),
  )
  cls = ARCHITECTURES[config.model_name]
  defaults = {f.name: f.default for f in dataclasses.fields(cls)}
  interaction = get(config, 'model.interaction') or defaults['interaction']
  hidden = tuple(config.towers.hidden)
  if interaction != 'mlp' and hidden:
    raise ConfigError(
      f'towers.hidden is {hidden} with model.interaction {interaction!r}, '
      "expected (): the tower's Dense(1) is the form's diagonal and bias "
      "(an MLP head is interaction 'mlp')"
    )


def check_wide(config) -> None:
  """Crosses are pairs; two towers take neither a wide part nor an
  interaction (their score factors into the towers' embeddings)."""
  for i, pair in enumerate(get(config, 'wide.crosses') or ()):
    if len(pair) != 2:
      raise ConfigError(
        f'wide.crosses[{i}] is {tuple(pair)}, expected a pair of feature names'
      )
  if not _is_two_tower(config):
    return
  interaction = get(config, 'interaction')
  if interaction != 'none':
    raise ConfigError(
      f'interaction is {interaction!r} with model {config.model_name!r}, '
      "expected 'none': two towers split x by feature"
    )
  if get(config, 'wide.enabled'):
    raise ConfigError(
      f'wide.enabled is True with model {config.model_name!r}, expected '
      "False: a two-tower score factors into the towers' embeddings"
    )
