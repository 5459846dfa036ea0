"""Loading the config file and its command-line overrides (shell code).

absl and ml_collections report a bad config file or override as a
traceback or a long multi-line message; `parse` turns each into one
`ConfigError` line naming the file (and line) or the key: a missing file,
a syntax error, a get_config that raises or takes no such argument or
returns no ConfigDict, an unknown key (with ml_collections' suggestion and
the full path), a tuple that is not one, a NaN.
"""

import ast
import inspect
import logging as std_logging
import math
import pathlib
import re
import traceback

from absl import flags, logging
from ml_collections import config_dict, config_flags

from mtl.errors import ConfigError

_TYPO = re.compile(r'Did you mean "(.+?)" instead of "(.+?)"')
_REQUIRED = re.compile(r'Flag --(\w+) must have a value other than None')


def config_spec(argv: list[str]) -> str | None:
  """The value of --config (`path` or `path:argument`), if given."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def one_line(text: str) -> str:
  return ' '.join(str(text).replace('\\n', ' ').split())


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
  if isinstance(root, AttributeError) and "'get_config'" in str(root):
    return ConfigError(
      f'{spec}: the file defines no get_config, expected a function '
      'get_config(arg=None) that returns the config (see configs/)'
    )
  if isinstance(root, TypeError) and (
    accepts := _get_config_accepts(path, (argument,) if colon else ())
  ):
    return ConfigError(f'{spec}: {accepts}')
  line = _line_in(root, path)
  if line is None:
    return _traceback_text_error(spec, path, str(error))
  message = one_line(root)
  message = message.removeprefix(f'{path_text}:').strip()
  return ConfigError(
    f'{spec}: {message} ({type(root).__name__} at {path_text} line {line})'
  )


def _traceback_text_error(spec, path, text) -> ConfigError | None:
  """ml_collections reports an error inside get_config as a message that
  holds the whole traceback as text: its last line is the error, and the
  config file's own frame gives the line."""
  frames = re.findall(r'File "([^"]+)", line (\d+)', text)
  lines = [n for f, n in frames if pathlib.Path(f).resolve() == path]
  last = text.strip().splitlines()[-1] if text.strip() else ''
  if not lines or 'Traceback (most recent call last)' not in text:
    return None
  kind, _, message = last.partition(': ')
  return ConfigError(
    f'{spec}: {one_line(message or kind)} ({kind} at '
    f'{spec.partition(":")[0]} line {lines[-1]})'
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


def parse(argv: list[str], config_flag) -> list[str]:
  """absl's parser; a config file, flag or override error as ConfigError."""
  spec = config_spec(argv)
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
      message = f'--{required[1]} is required' if required else one_line(e)
      raise ConfigError(message) from e
    raise
  finally:
    logging.get_absl_logger().removeFilter(quiet)
  config = config_flag.value
  if not isinstance(config, config_dict.ConfigDict):
    try:  # ml_collections keeps a load error until the config is read.
      config.keys()
    except OSError as e:
      raise ConfigError(f'{spec}: {one_line(_root(e))}') from e
    raise ConfigError(
      f'{spec}: get_config returned {type(config).__name__}, expected a '
      'ml_collections.ConfigDict'
    )
  _check_overrides(overrides)
  return rest
