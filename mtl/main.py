"""Command line: `mtl-train --config=configs/census_mmoe.py --workdir=DIR`.

Same as `python -m mtl.main ...`. Config keys are overridden with
`--config.<key>=<value>` (e.g. `--config.dataset.protocol=library`). Rerunning
with the same --workdir writes into the same run directory. Errors in the
config, the data or the command line end the run with one line on stderr and
exit code 2; `--traceback` shows the full trace instead.
"""

import pathlib
import re
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

# Errors that mean bad input (config, data, command line), not a bug;
# loaders and builders raise them with a one-line message.
PREEMPTED_EXIT_CODE = 143  # = mtl.preemption.PREEMPTED_EXIT_CODE
QUOTES = '\'"'
INPUT_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from mtl import loop  # After flag parsing: JAX starts only for a real run.

  try:
    config = _CONFIG.value  # Loads the config file.
  except (AttributeError, *INPUT_ERRORS, OSError) as e:
    _fail(e)
  try:
    loop.train_and_evaluate(config, pathlib.Path(_WORKDIR.value))
  except loop.Preempted as e:
    print(f'mtl-train: {e}', file=sys.stderr)
    sys.exit(PREEMPTED_EXIT_CODE)
  except INPUT_ERRORS as e:
    if _TRACEBACK.value:
      raise
    _fail(e)


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


def _fail(error) -> None:
  """Prints the error as one line on stderr and exits with code 2."""
  message = str(error.args[0] if getattr(error, 'args', None) else error)
  typo = re.search(r'Did you mean "(.+?)" instead of "(.+?)"', message)
  missing = re.search(r"""Key ["'](.+?)["'] does not exist""", message)
  if typo:  # ml_collections' locked-config error, several lines long.
    message = f'unknown config key {typo[2]!r} (did you mean {typo[1]!r}?)'
  elif missing:
    message = f'unknown config key {missing[1]!r}'
  elif isinstance(error, AttributeError | KeyError) and ' ' not in message:
    message = f'unknown config key {message.strip(QUOTES)!r}'
  message = ' '.join(message.replace('\\n', ' ').split())
  print(f'mtl-train: error: {message}', file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a bad config file or override as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(e)
  except (AttributeError, *INPUT_ERRORS, OSError) as e:
    # A typo in a config key (with ml_collections' suggestion), a wrong
    # type, or a config file that cannot be loaded.
    _fail(e)


def run():
  _add_config_root(sys.argv)
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
