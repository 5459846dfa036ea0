"""The experiments' command line: absl flags, the shared ones defined here.

A script asks for the shared flags it uses, then reads them from FLAGS:

  harness.define_flags(out='census_table', workdirs='census_table', seeds=20)
  ...
  harness.run_main(main)  # FLAGS.out, FLAGS.workdirs, FLAGS.force, ...

  --workdirs   root of the script's run directories (workdirs/<default>)
  --force      re-run finished runs (the old workdirs are moved aside)
  --out        results stem (experiments/results/<default>), a directory, or
               a file whose .json/.md/.png suffix is dropped
  --seeds      how many seeds, 0..N-1

Defining a flag twice (two scripts imported by one test process) keeps the
first definition instead of failing.
"""

import pathlib
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
REPO = pathlib.Path(__file__).resolve().parents[2]


def _define(kind, name, default, help_text, module_name):
  if name in FLAGS:
    return
  getattr(flags, f'DEFINE_{kind}')(
    name, default, help_text, module_name=module_name
  )


def _caller_module() -> str:
  """The module calling define_flags, as absl names it (for --helpshort)."""
  name = sys._getframe(2).f_globals.get('__name__', '__main__')
  return sys.argv[0] if name == '__main__' else name


def define_flags(
  *,
  out: str | None = None,
  workdirs: str | None = None,
  seeds: int | None = None,
  seeds_help: str = 'Seeds 0..N-1.',
) -> None:
  """Defines the shared flags this script uses (None: not used).

  Args:
    out: the results' default name: --out defaults to
      experiments/results/<out> ('': no default).
    workdirs: the runs' default folder: --workdirs defaults to
      workdirs/<workdirs>; also defines --force.
    seeds: the default of --seeds.
    seeds_help: its help text.
  """
  module = _caller_module()
  if out is not None:
    _define(
      'string',
      'out',
      str(REPO / 'experiments' / 'results' / out) if out else None,
      'Results stem (writes <stem>.json, .md, .png), or a directory.',
      module,
    )
  if workdirs is not None:
    _define(
      'string',
      'workdirs',
      str(REPO / 'workdirs' / workdirs),
      'Root of the run directories; finished runs of the same config are '
      'reused.',
      module,
    )
    _define(
      'bool',
      'force',
      False,
      'Re-run finished runs (their workdirs are moved aside, not deleted).',
      module,
    )
  if seeds is not None:
    _define('integer', 'seeds', seeds, seeds_help, module)


def run_main(main) -> None:
  """absl's app.run(main), its logs at WARNING unless --verbosity is given.

  As mtl-train: a run's INFO lines (orbax, step metrics) are hidden by
  default, and orbax's warnings that a finished run's checkpoints open
  read only; -v 0 (INFO) shows them.
  """

  def parse(argv):
    rest = app.parse_flags_with_usage(argv)
    if FLAGS['verbosity'].using_default_value:
      logging.set_verbosity(logging.WARNING)
      # Reading finished runs back: orbax's notes on read-only directories.
      from mtl.shell.cli import ReadOnlyNews

      logging.get_absl_logger().addFilter(ReadOnlyNews())
    return rest

  app.run(main, flags_parser=parse)


def floats(values) -> list[float]:
  """A DEFINE_list flag's strings as floats."""
  return [float(v) for v in values]


def census_config(model: str):
  """The census-income config of `model` (configs/census.py:<model>).

  Falls back to configs/census_<model>.py while configs/census.py does not
  exist.
  """
  import importlib

  try:
    module = importlib.import_module('configs.census')
  except ModuleNotFoundError as e:
    if e.name != 'configs.census':
      raise
    return importlib.import_module(f'configs.census_{model}').get_config()
  return module.get_config(model)


def census_config_path(model: str = 'mmoe') -> str:
  """The census config as a --config value, as census_config() picks it."""
  if (REPO / 'configs' / 'census.py').is_file():
    return f'configs/census.py:{model}'
  return f'configs/census_{model}.py'
