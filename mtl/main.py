"""Command line: `mtl-train --config=configs/census_mmoe.py --workdir=DIR`.

Same as `python -m mtl.main ...`. Config keys are overridden with
`--config.<key>=<value>` (e.g. `--config.dataset.protocol=library`). Rerunning
with the same --workdir writes into the same run directory. Errors in the
config, the data or the command line end the run with one line on stderr and
exit code 2; `--traceback` shows the full trace instead.
"""

import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Python config file, e.g. configs/census_mmoe.py.'
)
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Run directory: config.json, metrics.jsonl, results.json.'
)
_TRACEBACK = flags.DEFINE_bool(
  'traceback', False, 'Show the full traceback of a config or data error.'
)
flags.mark_flags_as_required(['config', 'workdir'])

# Errors that mean bad input (config, data, command line), not a bug.
INPUT_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from mtl import loop  # After flag parsing: JAX starts only for a real run.

  try:
    loop.train_and_evaluate(_CONFIG.value, pathlib.Path(_WORKDIR.value))
  except INPUT_ERRORS as e:
    if _TRACEBACK.value:
      raise
    message = str(e).strip().strip('"\'').splitlines()[0]
    print(f'mtl-train: error: {message}', file=sys.stderr)
    return 2
  return 0


def _add_config_root(argv: list[str]) -> None:
  """Lets config files `from configs import common` from any directory.

  Config files live in <repo>/configs/ and import their shared defaults as
  `configs.common`, so the folder above the config file goes on sys.path.
  """
  for i, arg in enumerate(argv):
    value = None
    if arg.startswith('--config='):
      value = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      value = argv[i + 1]
    if value:
      path = pathlib.Path(value.split(':', 1)[0]).resolve()
      sys.path.insert(0, str(path.parent.parent))


def run():
  _add_config_root(sys.argv)
  app.run(main)


if __name__ == '__main__':
  run()
