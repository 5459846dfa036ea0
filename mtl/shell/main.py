"""Command line: `mtl-train --config=configs/census_mmoe.py --workdir=DIR`.

Same as `python -m mtl.shell.main ...`. Config keys are overridden with
`--config.<key>=<value>` (e.g. `--config.dataset.protocol=library`). Rerunning
with the same --workdir writes into the same run directory.

Errors a user can cause (the config file, a `--config.<key>` value, a flag,
the data: `mtl.errors.MtlError`) end the run with one line on stderr,
`mtl-train: error: ...`, and exit code 2; `--traceback` shows the full trace
instead. Any other exception is a bug in mtl and keeps its traceback (exit
code 1). A non-finite loss ends the run with exit code 3, a preemption
(SIGTERM) with 143 after saving.

The console is quiet: the libraries' INFO logs (orbax, JAX, TFDS) and TFDS's
progress bars are off; `-v 0` (`--verbosity=0`, INFO) turns them on, `-v 1`
adds DEBUG. Metrics go to <workdir>/metrics.jsonl only.

Several processes (hosts) run the same command; `jax.distributed` joins them:
with --coordinator_address/--num_processes/--process_id given explicitly, or
auto-detected under SLURM (srun with more than one task) and on multi-host
TPU VMs. --num_cpu_devices emulates that many CPU devices per process (how
the multi-host path is exercised on one machine: launch/multiprocess_cpu.sh).
"""

import ast
import inspect
import logging as std_logging
import math
import os
import pathlib
import re
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_dict, config_flags

from mtl.errors import ConfigError, MtlError

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
_TYPO = re.compile(r'Did you mean "(.+?)" instead of "(.+?)"')
_REQUIRED = re.compile(r'Flag --(\w+) must have a value other than None')


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


def _config_spec(argv: list[str]) -> str | None:
  """The value of --config (`path` or `path:argument`), if given."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _add_config_root(argv: list[str]) -> None:
  """Lets config files `from configs import common` from any directory.

  Config files live in <repo>/configs/ and import their shared defaults as
  `configs.common`, so the folder above the config file goes on sys.path.
  """
  spec = _config_spec(argv)
  if spec:
    path = pathlib.Path(spec.split(':', 1)[0]).resolve()
    sys.path.insert(0, str(path.parent.parent))


def _one_line(text: str) -> str:
  return ' '.join(str(text).replace('\\n', ' ').split())


def _fail(error: BaseException, code: int = USER_ERROR_EXIT_CODE) -> None:
  """Prints the error as one line on stderr and exits with `code`."""
  print(f'mtl-train: error: {_one_line(error)}', file=sys.stderr)
  sys.exit(code)


def _wants_traceback(argv: list[str]) -> bool:
  return any(a in ('--traceback', '--traceback=true') for a in argv)


def _overrides(argv: list[str]) -> dict[str, str]:
  """`--config.<key>=<value>` on the command line: {key: value as typed}."""
  found = {}
  for i, arg in enumerate(argv):
    if not arg.startswith('--config.'):
      continue
    key, eq, value = arg[len('--config.') :].partition('=')
    if not eq:
      value = argv[i + 1] if i + 1 < len(argv) else ''
    found[key] = value
  return found


def _root(error: BaseException) -> BaseException:
  """The first exception of a chain: what absl and ml_collections re-raise."""
  while (inner := error.__cause__ or error.__context__) is not None:
    error = inner
  return error


def _line_in(error: BaseException, path: pathlib.Path) -> int | None:
  """The last line of `path` that `error` passed through, if any."""
  line = None
  for frame in traceback.extract_tb(error.__traceback__):
    if pathlib.Path(frame.filename).resolve() == path:
      line = frame.lineno
  return line


def _config_file_error(spec: str, error: BaseException) -> ConfigError | None:
  """The config file's own failure (a raise or a bug in it), as one line."""
  path_text, colon, argument = spec.partition(':')
  path = pathlib.Path(path_text).resolve()
  root = _root(error)
  if isinstance(root, TypeError) and (
    accepts := _get_config_accepts(path, (argument,) if colon else ())
  ):
    return ConfigError(f'{spec}: {accepts}')
  line = _line_in(root, path)
  if line is None:
    return None
  message = _one_line(root)
  message = message.removeprefix(f'{path_text}:').strip()
  return ConfigError(
    f'{spec}: {message} ({type(root).__name__} at {path_text} line {line})'
  )


def _get_config_accepts(path: pathlib.Path, args: tuple) -> str | None:
  """Why get_config cannot take `args` (None if it can, or if unknown)."""
  import importlib.util

  try:
    spec = importlib.util.spec_from_file_location('_mtl_config_probe', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    signature = inspect.signature(module.get_config)
  except Exception:  # noqa: BLE001 -- the module itself fails: reported so.
    return None
  try:
    signature.bind(*args)
  except TypeError:
    if not signature.parameters:
      return f'get_config takes no argument, got {args[0]!r}'
    return f'get_config{signature} cannot take {args or "no argument"!r}'
  return None


def _check_config_file(spec: str) -> None:
  """A missing config file or a syntax error in it, as one line."""
  path_text = spec.split(':', 1)[0]
  path = pathlib.Path(path_text)
  if not path.is_file():
    what = 'is a directory' if path.is_dir() else 'does not exist'
    raise ConfigError(f'config file {path_text} {what}')
  try:
    compile(path.read_bytes(), path_text, 'exec')
  except SyntaxError as e:
    raise ConfigError(
      f'config file {path_text} line {e.lineno}: {e.msg}'
    ) from e
  except (OSError, ValueError) as e:  # Unreadable, or NUL bytes.
    raise ConfigError(f'config file {path_text}: {e}') from e


def _unknown_key(error: BaseException, overrides: dict[str, str]) -> str:
  """ml_collections' 'unknown key' error, with the key's full path."""
  chain = [error]
  while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None:
    chain.append(inner)
  texts = [str(x.args[0] if x.args else x) for x in chain]
  typo = next(filter(None, (_TYPO.search(t) for t in texts)), None)
  leaf = typo[2] if typo else texts[-1].split('\n')[0].strip('\'" ')
  path = next(
    (k for k in overrides if leaf in k.split('.')),
    leaf,
  )
  if typo:
    parent = path.rsplit('.', 1)[0] + '.' if '.' in path else ''
    return f'unknown config key {path!r} (did you mean {parent + typo[1]!r}?)'
  return f'unknown config key {path!r}'


def _literal_problem(raw: str) -> str | None:
  """Why `raw`, written as a tuple, is not one (names in it: nan, abc)."""
  try:
    tree = ast.parse(raw, mode='eval')
  except SyntaxError:
    return None
  names = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)})
  if not names:
    return None
  listed = ', '.join(repr(n) for n in names)
  return (
    f'{listed} {"is" if len(names) == 1 else "are"} not a value; numbers '
    'must be finite and strings quoted'
  )


def _is_nan(value) -> bool:
  if isinstance(value, float):
    return math.isnan(value)
  if isinstance(value, tuple | list):
    return any(_is_nan(v) for v in value)
  return False


def _check_overrides(overrides: dict[str, str]) -> None:
  """`--config.<key>=<value>` values that parsed into nonsense."""
  values = config_flags.get_override_values(flags.FLAGS['config'])
  for key, raw in overrides.items():
    value = values.get(key)
    if (
      isinstance(value, tuple)
      and value == (raw,)
      and raw.lstrip()[:1] in '(['
      and (problem := _literal_problem(raw))
    ):
      raise ConfigError(
        f'--config.{key}={raw}: not a tuple of Python literals ({problem})'
      )
    if _is_nan(value):
      raise ConfigError(f'--config.{key}={raw}: nan, expected a number')


class _BelowError:
  """A logging filter: only errors pass."""

  def filter(self, record) -> bool:
    return record.levelno >= std_logging.ERROR


def _parse(argv: list[str]) -> list[str]:
  """absl's parser; a config file, flag or override error as ConfigError."""
  spec = _config_spec(argv)
  if spec:
    _check_config_file(spec)
  overrides = _overrides(argv)
  quiet = _BelowError()  # ml_collections' warnings: the error says it.
  logging.get_absl_logger().addFilter(quiet)
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001 -- sorted out below.
    if spec and (from_file := _config_file_error(spec, e)):
      raise from_file from e
    text = str(_root(e))
    if spec and ("'NoneType'" in text or '--config must have a value' in text):
      raise ConfigError(
        f'{spec}: get_config returned None, expected a '
        'ml_collections.ConfigDict'
      ) from e
    if isinstance(_root(e), KeyError | AttributeError) and overrides:
      raise ConfigError(_unknown_key(e, overrides)) from e
    if isinstance(e, flags.Error):
      required = _REQUIRED.search(str(e))
      message = f'--{required[1]} is required' if required else _one_line(e)
      raise ConfigError(message) from e
    raise
  finally:
    logging.get_absl_logger().removeFilter(quiet)
  config = _CONFIG.value
  if not isinstance(config, config_dict.ConfigDict):
    try:  # ml_collections keeps a load error until the config is read.
      config.keys()
    except OSError as e:
      raise ConfigError(f'{spec}: {_one_line(_root(e))}') from e
    raise ConfigError(
      f'{spec}: get_config returned {type(config).__name__}, expected a '
      'ml_collections.ConfigDict'
    )
  _check_overrides(overrides)
  return rest


def _parse_flags(argv: list[str]) -> list[str]:
  """The flags_parser of app.run: errors as one line, quiet logs by default."""
  try:
    rest = _parse(argv)
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
