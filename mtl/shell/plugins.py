"""config.plugins: the user's modules that register components (shell).

A component defined outside mtl (an architecture, a balancing method, a
dataset loader, an evaluation metric, a feature kind of the table schema)
is registered by its own module, with the registry's one line
(`ARCHITECTURES['mine'] = Mine`, `WEIGHTINGS`, `DATASETS`,
`mtl.core.metrics_registry.METRICS`,
`mtl.data.feature_kinds.FEATURE_KINDS`), at import or in a `register()`
function the module defines. `load(modules)` imports each
named module and calls its `register()` if it has one; loading twice
registers the same entries again.

Where they are loaded: `configs/common.base_config(..., plugins=...)`
loads them before it builds the config from the registries (so the
components' keywords are config keys) and records them as
`config.plugins`; validate.check_config loads `config.plugins` before it
checks any name (a `--config.plugins=...` override); mtl-eval, mtl-predict
and mtl-export load the ones a workdir's config.json records
(restored_config.read_config). A module that fails to import is one ConfigError
line.
"""

import importlib

from mtl.errors import ConfigError
from mtl.shell.config_rules import Rule, check


def load(modules, key: str = 'plugins') -> None:
  """Imports each module of `modules` and calls its `register()`, if any."""
  if modules is None:
    return
  check(key, modules, Rule('tuple', each=Rule('str')))
  for i, name in enumerate(modules):
    try:
      module = importlib.import_module(name)
    except ImportError as e:
      raise ConfigError(
        f'{key}[{i}] {name!r} could not be imported ({e}), expected a '
        'module on the Python path that registers components'
      ) from e
    register = getattr(module, 'register', None)
    if callable(register):
      register()
