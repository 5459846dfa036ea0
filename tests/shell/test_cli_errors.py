"""The command line's errors and its console, as a user sees them.

A user's mistake (the config file, a `--config.<key>` value, a flag, the
data) is one stderr line `mtl-train: error: ...` and exit code 2; anything
else is a bug and keeps its traceback (exit code 1). Library INFO logs and
TFDS's progress bars are off unless `-v 0`. Each case runs
`python -m mtl.shell.main` in a fresh process (tests/cli.py), as
tests/shell/test_main.py does.
"""

import pathlib
import re
import textwrap

import pytest

from tests import cli

REPO = pathlib.Path(__file__).resolve().parents[2]
# An absl log record: I (info), W, E or F, then MMDD and the time.
RECORD = re.compile(r'^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+ ', re.MULTILINE)


def _env(tmp_path: pathlib.Path) -> dict:
  env = cli.one_device_env()  # One device, as a plain user run.
  env['WANDB_MODE'] = 'disabled'
  env['TFDS_DATA_DIR'] = str(tmp_path / 'tfds')
  return env


def run_main(tmp_path, *args, timeout=300):
  return cli.run(args, env=_env(tmp_path), timeout=timeout)


def run_patched(tmp_path, patch: str, *args, timeout=300):
  """The real CLI (`main.run()`) with `patch` applied to mtl first."""
  return cli.run(
    args, env=_env(tmp_path), timeout=timeout, patch=textwrap.dedent(patch)
  )


def _one_error_line(proc) -> str:
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith('mtl-train: error: '), lines[0]
  return lines[0]


CONFIG_FILES = {
  'syntax error': ('def get_config(:\n', 'line 1: invalid syntax'),
  'get_config raises': (
    'def get_config():\n  raise RuntimeError("no such setting")\n',
    'no such setting (RuntimeError at ',
  ),
  'get_config has a bug': (
    'def get_config():\n  return {}["model"]\n',
    "'model' (KeyError at ",
  ),
  'a failing import': (
    'import no_such_module_here\n\n\ndef get_config():\n  return None\n',
    "No module named 'no_such_module_here' (ModuleNotFoundError at ",
  ),
  'get_config returns None': (
    'def get_config():\n  pass\n',
    'get_config returned None, expected a ml_collections.ConfigDict',
  ),
  'no get_config': (
    'def get_conifg():\n  return None\n',
    'the file defines no get_config, expected a function',
  ),
}


@pytest.mark.parametrize('name', sorted(CONFIG_FILES))
def test_bad_config_file_is_one_line(tmp_path, name):
  source, message = CONFIG_FILES[name]
  path = tmp_path / 'bad_config.py'
  path.write_text(source)
  line = _one_error_line(
    run_main(tmp_path, f'--config={path}', f'--workdir={tmp_path / "run"}')
  )
  assert str(path) in line
  assert message in line


def test_missing_config_file_is_one_line(tmp_path):
  path = tmp_path / 'no_such_config.py'
  line = _one_error_line(
    run_main(tmp_path, f'--config={path}', f'--workdir={tmp_path / "run"}')
  )
  assert line == f'mtl-train: error: config file {path} does not exist'


def test_missing_workdir_is_one_line(tmp_path):
  line = _one_error_line(run_main(tmp_path, '--config=configs/smoke.py'))
  assert line == 'mtl-train: error: --workdir is required'


def test_config_argument_get_config_does_not_take(tmp_path):
  path = tmp_path / 'no_argument.py'
  path.write_text('def get_config():\n  return None\n')
  line = _one_error_line(
    run_main(tmp_path, f'--config={path}:mmoe', f'--workdir={tmp_path / "run"}')
  )
  assert line == (
    f"mtl-train: error: {path}:mmoe: get_config takes no argument, got 'mmoe'"
  )


def test_unknown_config_argument_is_one_short_line(tmp_path):
  line = _one_error_line(
    run_main(tmp_path, '--config=configs/smoke.py:foo', f'--workdir={tmp_path}')
  )
  assert line.startswith(
    "mtl-train: error: configs/smoke.py:foo: argument 'foo'"
  )
  assert 'expected model,dataset' in line
  assert 'config_flags.py' not in line and len(line) < 300, line


OVERRIDES = {
  'nan in a tuple': (
    '--config.weighting.fixed.weights=(1.0,nan)',
    '--config.weighting.fixed.weights=(1.0,nan): not a tuple of Python '
    "literals ('nan' is not a value",
  ),
  'a bare word in a tuple': (
    '--config.weighting.fixed.weights=(1.0,abc)',
    'weighting.fixed.weights=(1.0,abc): not a tuple of Python literals '
    "('abc' is not a value",
  ),
  'nan for a number': (
    '--config.optimizer.learning_rate=nan',
    '--config.optimizer.learning_rate=nan: nan, expected a number',
  ),
  'not an int': ('--config.batch_size=abc', '--config.batch_size=abc'),
  'unknown key': (
    '--config.modle_name=mmoe',
    "unknown config key 'modle_name' (did you mean 'model_name'?)",
  ),
  'unknown nested key': (
    '--config.optimizer.learnin_rate=0.1',
    "unknown config key 'optimizer.learnin_rate' (did you mean "
    "'optimizer.learning_rate'?)",
  ),
  'unknown flag': ('--no_such_flag=1', "Unknown command line flag 'no_such"),
  'bad device count': ('--num_cpu_devices=0', '--num_cpu_devices is 0'),
}


@pytest.mark.parametrize('name', sorted(OVERRIDES))
def test_bad_override_or_flag_is_one_line(tmp_path, name):
  override, message = OVERRIDES[name]
  line = _one_error_line(
    run_main(
      tmp_path, '--config=configs/smoke.py', f'--workdir={tmp_path}', override
    )
  )
  assert message in line, line


RAISE_IN_TRAIN = """
from mtl.shell import trainer
from mtl import errors

def train(config, workdir):
  raise {error}

trainer.train = train
"""


def test_a_bug_keeps_its_traceback_and_exits_1(tmp_path):
  proc = run_patched(
    tmp_path,
    RAISE_IN_TRAIN.format(error='RuntimeError("an internal bug")'),
    '--config=configs/smoke.py',
    f'--workdir={tmp_path}',
  )
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert 'Traceback (most recent call last)' in proc.stderr
  assert proc.stderr.rstrip().endswith('RuntimeError: an internal bug')
  assert 'mtl-train: error' not in proc.stderr


def test_a_plain_value_error_is_a_bug_too(tmp_path):
  """Only mtl.errors types are user errors: a ValueError keeps its trace."""
  proc = run_patched(
    tmp_path,
    RAISE_IN_TRAIN.format(error='ValueError("no such key")'),
    '--config=configs/smoke.py',
    f'--workdir={tmp_path}',
  )
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert proc.stderr.rstrip().endswith('ValueError: no such key')


@pytest.mark.parametrize(
  'kind', ['ConfigError', 'DataError', 'DataFileNotFound', 'WorkdirError']
)
def test_a_user_error_in_training_is_one_line(tmp_path, kind):
  args = ('--config=configs/smoke.py', f'--workdir={tmp_path}')
  patch = RAISE_IN_TRAIN.format(error=f'errors.{kind}("x is 7, expected 8")')
  line = _one_error_line(run_patched(tmp_path, patch, *args))
  assert line == 'mtl-train: error: x is 7, expected 8'
  # --traceback shows where it came from instead.
  proc = run_patched(tmp_path, patch, *args, '--traceback')
  assert proc.returncode == 1
  assert 'Traceback (most recent call last)' in proc.stderr


def _orbax_info(stderr: str) -> list[str]:
  return [
    line
    for line in stderr.splitlines()
    if RECORD.match(line)
    and line[0] == 'I'
    and ('orbax' in line or 'checkpoint' in line)
  ]


def test_console_is_quiet_and_v0_brings_the_info_logs_back(tmp_path):
  quiet = run_main(
    tmp_path, '--config=configs/smoke.py', f'--workdir={tmp_path / "quiet"}'
  )
  assert quiet.returncode == 0, quiet.stderr[-3000:]
  records = RECORD.findall(quiet.stderr)
  assert 'I' not in records, quiet.stderr[-3000:]
  # Metric rows go to metrics.jsonl only.
  assert 'step 2:' not in quiet.stderr
  assert (tmp_path / 'quiet' / 'metrics.jsonl').stat().st_size > 0

  verbose = run_main(
    tmp_path,
    '--config=configs/smoke.py',
    f'--workdir={tmp_path / "verbose"}',
    '-v',
    '0',
  )
  assert verbose.returncode == 0, verbose.stderr[-3000:]
  assert len(_orbax_info(verbose.stderr)) >= 10, verbose.stderr[-3000:]


def test_tfds_preparation_is_quiet_and_data_errors_one_line(tmp_path, data_dir):
  """A census run prepares its cache in silence, then stops on one line."""
  proc = run_main(
    tmp_path,
    '--config=configs/smoke.py:mmoe,census',
    f'--workdir={tmp_path / "run"}',
    f'--config.dataset.data_dir={tmp_path / "tfds"}',
    '--config.batch_size=1000000',
    timeout=600,
  )
  assert (tmp_path / 'tfds' / 'census_income').is_dir()
  line = _one_error_line(proc)  # No progress bar, no TFDS warning.
  assert 'batch_size 1000000 exceeds the ' in line
