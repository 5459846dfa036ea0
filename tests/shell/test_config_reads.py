"""A ConfigDict is read only by the config's own modules: loading it, its
validation, the builders and the settings read from it once; everything
else receives typed objects.

Oracle: the source itself, read with `ast` (no import runs), as
tests/test_layers.py reads the imports. A module reads a ConfigDict if it
accesses an attribute of a name `config` or `cfg` (`config.batch_size`,
`cfg.get(...)`), calls `.to_dict()` on a name or an attribute (not on a
call's result: pandas' `value_counts().to_dict()` is no config), or imports
ml_collections. configs/ is outside mtl/.
"""

import ast
import pathlib

from tests import syntax_trees

MTL = pathlib.Path(__file__).resolve().parents[2] / 'mtl'
NAMES = ('config', 'cfg')

# Where the config may be read: its loading, validation, builders, and the
# typed settings of the training loop (read once).
ALLOWED = {
  'mtl.shell.build',  # config -> dataset, model, optimizer, devices
  'mtl.shell.keywords',  # config entries from component signatures
  'mtl.shell.members',  # config.population -> the members
  'mtl.shell.settings',  # the training loop's typed settings
  'mtl.shell.config_file',  # the config file and its overrides
  'mtl.shell.config_record',  # config.json and the fingerprint
  # A trained run's config.json read back: the ConfigDict, its typed
  # EvalSettings, the dataset and preprocessing record built from it.
  'mtl.shell.restored_config',
  'mtl.shell.main',  # mtl-train: the config flag
  'mtl.shell.prepare',  # mtl-prepare: the config flag
  'mtl.shell.validate',
  'mtl.shell.validate_keywords',
  'mtl.shell.validate_model',
  'mtl.data.table_spec',  # the table dataset's keywords (to_dict)
  # A sweep cell's config built: its file loaded, the grid's values set.
  'mtl.search.sweep_config',
}

# Modules that still read the ConfigDict, to be given typed objects: none
# now. The set only shrinks.
TODO: set[str] = set()


def _module(path: pathlib.Path) -> str:
  parts = path.relative_to(MTL.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _reads_config(path: pathlib.Path) -> bool:
  for node in ast.walk(syntax_trees.parse(path.read_text())):
    if isinstance(node, ast.Attribute):
      if isinstance(node.value, ast.Name) and node.value.id in NAMES:
        return True
      if node.attr == 'to_dict' and isinstance(
        node.value, (ast.Name, ast.Attribute)
      ):
        return True
    elif isinstance(node, ast.Import):
      if any(a.name.split('.')[0] == 'ml_collections' for a in node.names):
        return True
    elif isinstance(node, ast.ImportFrom):
      if (node.module or '').split('.')[0] == 'ml_collections':
        return True
  return False


READERS = {_module(p) for p in MTL.rglob('*.py') if _reads_config(p)}


def test_only_the_allowed_modules_read_the_config():
  assert READERS - ALLOWED - TODO == set(), (
    'these modules read a ConfigDict: give them typed objects (e.g. '
    'mtl/shell/settings.py) built where the config is read'
  )


def test_the_todo_set_only_names_modules_that_still_read_it():
  assert TODO - READERS == set(), 'no longer a reader: remove it from TODO'
  assert not TODO & ALLOWED


def test_the_training_loop_reads_settings_not_the_config():
  loop = {
    f'mtl.shell.{name}'
    for name in (
      'trainer',
      'run_setup',
      'epoch_loop',
      'loop_state',
      'finish',
      'engines',
      'population_engine',
      'epochs',
    )
  }
  assert loop <= {_module(p) for p in MTL.rglob('*.py')}
  assert not loop & READERS
