"""A sweep cell's config (shell code of mtl-sweep, mtl/search/sweep.py).

`cell_config` loads the cell's config file ('file.py' or 'file.py:arg', as
ml_collections' config_flags reads it), sets the sweep's overrides and the
cell's grid values, makes the sweep's seeds the members of a population
and names the W&B group and tags. `load_module` imports a Python file (a
config file or a sweep file).
"""

import importlib.util
import pathlib


def load_module(path: pathlib.Path):
  """The module of a Python file, imported from its path."""
  if not path.is_file():
    raise FileNotFoundError(f'{path} does not exist')
  spec = importlib.util.spec_from_file_location(f'_mtl_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def set_key(config, key: str, value) -> None:
  """Sets the dotted `key` of `config` (a list as a tuple); a KeyError
  unless the config has the key."""
  *parents, leaf = key.split('.')
  node = config
  for p in parents:
    node = node[p]
  if leaf not in node:
    raise KeyError(f'sweep: config has no key {key!r}')
  node[leaf] = tuple(value) if isinstance(value, list) else value


def cell_config(sweep, cell, repo: pathlib.Path):
  """The locked ConfigDict of one cell, its members being the seeds."""
  path, _, arg = cell['config'].partition(':')
  path = pathlib.Path(path)
  if not path.is_absolute():
    path = repo / path
  module = load_module(path)
  # As ml_collections' config_flags does: 'file.py:arg' -> get_config(arg).
  config = module.get_config(arg) if arg else module.get_config()
  for key, value in {**sweep['overrides'], **cell['values']}.items():
    set_key(config, key, value)
  config.population.seeds = tuple(sweep['seeds'])
  group = f'{sweep["name"]}/{cell["name"]}'
  config.wandb.group = group
  config.wandb.tags = (
    sweep['name'],
    config.model_name,
    *(f'{k.split(".")[-1]}={v}' for k, v in cell['values'].items()),
  )
  return config
