"""Command line: `mtl-train --config=configs/census_mmoe.py --workdir=DIR`.

Same as `python -m mtl.shell.main ...`. Config keys are overridden with
`--config.<key>=<value>` (e.g. `--config.dataset.protocol=library`). Rerunning
with the same --workdir writes into the same run directory.

Errors a user can cause (the config file, a `--config.<key>` value, a flag,
the data: `mtl.errors.MtlError`) end the run with one line on stderr,
`mtl-train: error: ...`, and exit code 2; `--traceback` shows the full trace
instead. Any other exception is a bug in mtl and keeps its traceback (exit
code 1). A non-finite loss (or a validation loss that diverged) ends the
run with exit code 3, a preemption (SIGTERM) with 143 after saving. A full
disk (ENOSPC) is one line too, naming the file or the workdir and the last
intact checkpoint (`mtl.shell.storage_faults`).

The console is quiet: the libraries' INFO logs (orbax, JAX, TFDS) and TFDS's
progress bars are off; `-v 0` (`--verbosity=0`, INFO) turns them on, `-v 1`
adds DEBUG. Metrics go to <workdir>/metrics.jsonl only.

Several processes (hosts) run the same command; `jax.distributed` joins them:
with --coordinator_address/--num_processes/--process_id given explicitly, or
auto-detected under SLURM (srun with more than one task) and on multi-host
TPU VMs. --num_cpu_devices emulates that many CPU devices per process (how
the multi-host path is exercised on one machine: launch/multiprocess_cpu.sh).
"""

import os
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mtl.errors import ConfigError, MtlError
from mtl.shell import config_file

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

PREEMPTED_EXIT_CODE = 143  # = mtl.shell.preemption.PREEMPTED_EXIT_CODE
NONFINITE_EXIT_CODE = 3
USER_ERROR_EXIT_CODE = 2
# ml_collections' suggestion for a mistyped key.


def main(argv):
  if len(argv) > 1:
    _fail(ConfigError(f'unexpected arguments: {" ".join(argv[1:])}'))
  _set_library_logging()
  try:
    _start_jax()
  except MtlError as e:
    _fail(e)
  # After flag parsing: JAX starts only for a real run.
  from mtl.shell import finite, preemption, trainer

  try:
    trainer.train(_CONFIG.value, pathlib.Path(_WORKDIR.value))
  except preemption.Preempted as e:
    print(f'mtl-train: {e}', file=sys.stderr)
    sys.exit(e.exit_code)  # 143 for SIGTERM, 130 for SIGINT.
  except KeyboardInterrupt:
    # Ctrl-C before the training loop's guard was set up: nothing to save.
    print(
      'mtl-train: interrupted before training started; nothing was saved',
      file=sys.stderr,
    )
    sys.exit(130)
  except finite.NonFinite as e:
    if _TRACEBACK.value:
      raise
    _fail(e, code=NONFINITE_EXIT_CODE)
  except MtlError as e:
    if _TRACEBACK.value:
      raise
    _fail(e)
  except OSError as e:  # A full disk under a result or metrics write.
    from mtl.shell import storage_faults

    if _TRACEBACK.value or not storage_faults.is_disk_full(e):
      raise
    _fail(storage_faults.written(e, _WORKDIR.value))


def _set_library_logging() -> None:
  """TFDS's progress bars only with -v 0 or more, as the INFO logs.

  The logs follow absl's verbosity, which _parse_flags keeps at WARNING
  unless -v is given: absl's handler sits on the root logger, so orbax and
  TFDS (absl logging) and JAX (stdlib logging) all follow the root's level.
  """
  import tensorflow_datasets as tfds

  from mtl.shell import console

  tfds.display_progress_bar(logging.get_verbosity() >= logging.INFO)
  console.route_logs(plain=logging.get_verbosity() < logging.INFO)


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
      raise ConfigError(
        f'--num_cpu_devices is {_NUM_CPU_DEVICES.value}, expected >= 1'
      )
    jax.config.update('jax_num_cpu_devices', _NUM_CPU_DEVICES.value)
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ConfigError(
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
      raise ConfigError(
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
  spec = config_file.config_spec(argv)
  if spec:
    path = pathlib.Path(spec.split(':', 1)[0]).resolve()
    sys.path.insert(0, str(path.parent.parent))


def _fail(error: BaseException, code: int = USER_ERROR_EXIT_CODE) -> None:
  """Prints the error as one line on stderr and exits with `code`."""
  print(f'mtl-train: error: {config_file.one_line(error)}', file=sys.stderr)
  sys.exit(code)


def _wants_traceback(argv: list[str]) -> bool:
  return any(a in ('--traceback', '--traceback=true') for a in argv)


def _parse_flags(argv: list[str]) -> list[str]:
  """The flags_parser of app.run: errors as one line, quiet logs by default."""
  try:
    rest = config_file.parse(argv, _CONFIG)
  except ConfigError as e:
    if _wants_traceback(argv):
      raise
    _fail(e)
  if flags.FLAGS['verbosity'].using_default_value:
    # absl would raise it to INFO after parsing: keep WARNING unless -v.
    logging.set_verbosity(logging.WARNING)
  return rest


def run():
  _add_config_root(sys.argv)
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
