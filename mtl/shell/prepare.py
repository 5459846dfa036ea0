"""`mtl-prepare --config=configs/kuairand.py [--beam_option=FLAG ...]`:
prepares a config's dataset (its TFDS cache) without training.

Without --beam_option the table is prepared in this process, as mtl-train
would. With Beam pipeline flags, a table dataset (`table` and the configs
built on it) is prepared on Apache Beam (mtl/data/beam_prepare.py; the
[beam] extra), the same bits, e.g. on this machine's cores:

  mtl-prepare --config=configs/movielens_table.py \\
    --beam_option=--direct_num_workers=2 \\
    --beam_option=--direct_running_mode=multi_processing

or on a cluster (docs/scaling.md: Dataflow, Flink, Spark). mtl-train with
the same config (and --config.dataset.data_dir) then finds it prepared.
`--config.<key>=<value>` overrides config keys as for mtl-train. Errors are
one line on stderr (exit code 2), as mtl-train's.
"""

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mtl.errors import ConfigError, MtlError

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Python config file, e.g. configs/kuairand.py.'
)
_BEAM = flags.DEFINE_multi_string(
  'beam_option',
  [],
  'An Apache Beam pipeline flag (repeat for several), e.g. '
  '--beam_option=--direct_num_workers=2; none: prepared in this process.',
)
_TRACEBACK = flags.DEFINE_bool(
  'traceback', False, 'Show the full traceback of a config or data error.'
)
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    _fail(ConfigError(f'unexpected arguments: {" ".join(argv[1:])}'))
  try:
    from mtl.shell import build

    out = build.prepare_dataset(_CONFIG.value, tuple(_BEAM.value) or None)
  except MtlError as e:
    if _TRACEBACK.value:
      raise
    _fail(e)
  rows = ', '.join(f'{s} {n:,}' for s, n in out['rows'].items())
  where = 'on Beam' if _BEAM.value else 'in process'
  print(
    f'mtl-prepare: {out["prepared_dir"]} ({rows} rows), ready or prepared '
    f'{where} in {out["seconds"]:.1f} s'
  )


def _fail(error: BaseException) -> None:
  from mtl.shell import config_file

  print(f'mtl-prepare: error: {config_file.one_line(error)}', file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  """Config and override errors as one line (as mtl-train's)."""
  from mtl.shell import config_file

  try:
    rest = config_file.parse(argv, _CONFIG)
  except ConfigError as e:
    if '--traceback' in argv:
      raise
    _fail(e)
  logging.set_verbosity(logging.WARNING)
  return rest


def run() -> None:
  from mtl.shell import config_file

  spec = config_file.config_spec(sys.argv)
  if spec:  # Config files import `configs.common` (as mtl-train allows).
    path = pathlib.Path(spec.split(':', 1)[0]).resolve()
    sys.path.insert(0, str(path.parent.parent))
  try:
    import tensorflow_datasets as tfds

    tfds.display_progress_bar(False)
  except ImportError:  # pragma: no cover
    pass
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
