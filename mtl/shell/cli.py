"""The command-line frame of mtl-eval, mtl-predict, mtl-export, mtl-report.

As mtl-train (mtl/shell/main.py): a user's mistake (a flag, the workdir,
the data: `mtl.errors.MtlError`) is one line on stderr, `<prog>: error:
...`, with exit code 2 (`--traceback` shows the trace instead); anything
else is a bug and keeps its traceback. The libraries' INFO logs and TFDS's
progress bars are off. argparse rather than absl flags: these tools share
flag names with mtl-train and each other, and absl's are process-global.
"""

import argparse
import logging as pylogging
import sys

from mtl.errors import MtlError

USER_ERROR_EXIT_CODE = 2


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # One line, no usage block.
    print(f'{self.prog}: error: {message}', file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)


class ReadOnlyNews(pylogging.Filter):
  """Drops orbax's notes that a checkpoint directory is opened read only."""

  def filter(self, record) -> bool:
    message = record.getMessage()
    return not message.startswith(
      ('CheckpointManagerOptions.read_only', 'Given directory is read only')
    )


def _quiet() -> None:
  from absl import logging

  logging.set_verbosity(logging.WARNING)
  logging.get_absl_logger().addFilter(ReadOnlyNews())
  try:
    import tensorflow_datasets as tfds

    tfds.display_progress_bar(False)
  except ImportError:  # pragma: no cover
    pass


def run(prog: str, doc: str, add_flags, body, argv=None) -> None:
  """Parses `argv` (default sys.argv[1:]) and runs `body(args)`."""
  parser = _Parser(
    prog=prog,
    description=doc.split('\n\n')[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  add_flags(parser)
  parser.add_argument(
    '--traceback', action='store_true', help='Show the full traceback.'
  )
  args = parser.parse_args(argv)
  _quiet()
  try:
    body(args)
  except MtlError as e:
    if args.traceback:
      raise
    line = ' '.join(str(e).split())
    print(f'{prog}: error: {line}', file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)
