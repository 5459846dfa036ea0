"""Command line: `mtl-train --config=configs/census_mmoe.py --workdir=DIR`.

Same as `python -m mtl.shell.main ...`. Config keys are overridden with
`--config.<key>=<value>` (e.g. `--config.dataset.protocol=library`). Rerunning
with the same --workdir writes into the same run directory. Errors in the
config, the data or the command line end the run with one line on stderr and
exit code 2; `--traceback` shows the full trace instead. A non-finite loss
ends it with exit code 3, a preemption (SIGTERM) with 143 after saving.

Several processes (hosts) run the same command; `jax.distributed` joins them:
with --coordinator_address/--num_processes/--process_id given explicitly, or
auto-detected under SLURM (srun with more than one task) and on multi-host
TPU VMs. --num_cpu_devices emulates that many CPU devices per process (how
the multi-host path is exercised on one machine: launch/multiprocess_cpu.sh).
"""

import os
import pathlib
import re
import sys

from absl import app, flags, logging
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
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address',
  None,
  'host:port of process 0 for a multi-process run (jax.distributed).',
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', None, 'Processes in a multi-process run.'
)
_PROCESS_ID = flags.DEFINE_integer(
  'process_id', None, 'This process, 0..num_processes-1.'
)
_NUM_CPU_DEVICES = flags.DEFINE_integer(
  'num_cpu_devices',
  None,
  'Emulate this many CPU devices in this process (testing the multi-device '
  'and multi-host paths on a CPU machine).',
)
flags.mark_flags_as_required(['config', 'workdir'])

# Errors that mean bad input (config, data, command line), not a bug;
# loaders and builders raise them with a one-line message.
PREEMPTED_EXIT_CODE = 143  # = mtl.shell.preemption.PREEMPTED_EXIT_CODE
NONFINITE_EXIT_CODE = 3
QUOTES = '\'"'
INPUT_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  _start_jax()
  # After flag parsing: JAX starts only for a real run.
  from mtl.shell import finite, loop, population_loop, preemption
  from mtl.shell import members as population_members

  try:
    config = _CONFIG.value  # Loads the config file.
  except (AttributeError, *INPUT_ERRORS, OSError) as e:
    _fail(e)
  try:
    train = (
      population_loop.train_population
      if population_members.is_population(config)
      else loop.train_and_evaluate
    )
    train(config, pathlib.Path(_WORKDIR.value))
  except preemption.Preempted as e:
    print(f'mtl-train: {e}', file=sys.stderr)
    sys.exit(PREEMPTED_EXIT_CODE)
  except finite.NonFinite as e:
    if _TRACEBACK.value:
      raise
    print(f'mtl-train: error: {e}', file=sys.stderr)
    sys.exit(NONFINITE_EXIT_CODE)
  except INPUT_ERRORS as e:
    if _TRACEBACK.value:
      raise
    _fail(e)


def _cluster_detected() -> str | None:
  """The cluster jax.distributed can configure itself on, if any."""
  if (
    int(
      os.environ.get('SLURM_STEP_NUM_TASKS', os.environ.get('SLURM_NTASKS', 1))
    )
    > 1
    and 'SLURM_STEP_ID' in os.environ
  ):
    return 'SLURM'
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if len([h for h in hosts.split(',') if h]) > 1:
    return 'TPU VM'
  return None


def _start_jax() -> None:
  """CPU device emulation and jax.distributed, before JAX's backend starts."""
  import jax

  if _NUM_CPU_DEVICES.value is not None:
    if _NUM_CPU_DEVICES.value < 1:
      raise app.UsageError(
        f'--num_cpu_devices is {_NUM_CPU_DEVICES.value}, expected >= 1'
      )
    jax.config.update('jax_num_cpu_devices', _NUM_CPU_DEVICES.value)
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise app.UsageError(
        '--coordinator_address, --num_processes and --process_id go '
        'together; got '
        + ', '.join(
          f'{n}={v}'
          for n, v in zip(
            ('coordinator_address', 'num_processes', 'process_id'),
            explicit,
            strict=True,
          )
        )
      )
    if not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
      raise app.UsageError(
        f'--process_id is {_PROCESS_ID.value}, expected 0..'
        f'{_NUM_PROCESSES.value - 1}'
      )
    jax.distributed.initialize(*explicit)
    how = 'explicit flags'
  elif how := _cluster_detected():
    jax.distributed.initialize()  # Reads the cluster's environment.
  else:
    return
  logging.info(
    'process %d of %d (%s), %d local / %d global devices',
    jax.process_index(),
    jax.process_count(),
    how,
    jax.local_device_count(),
    jax.device_count(),
  )


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
