"""The workdir contract: config fingerprint, lock, writability, metrics."""

import errno
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings

import pytest

from mtl.errors import WorkdirError
from mtl.shell import json_files
from mtl.shell import lock as lock_lib
from mtl.shell import workdir as wd
from mtl.shell.config_fingerprint import fingerprint
from mtl.shell.config_record import check_config, record_config

REPO = pathlib.Path(__file__).resolve().parents[2]


def _config(**changes):
  """A config dict shaped like configs/common.py's (nested, tuples)."""
  c = {
    'seed': 0,
    'dataset_name': 'census_income',
    'dataset': {
      'task_group': 1,
      'data_dir': None,
      'manual_dir': '/data/census',
      'chunksize': 65536,
    },
    'model_name': 'mmoe',
    'model': {'num_experts': 8, 'expert_hidden': (64,)},
    'optimizer': {'name': 'adam', 'learning_rate': 2e-3, 'schedule': 'cosine'},
    'weighting_name': 'equal',
    'weighting': {'equal': {}, 'dwa': {'temperature': 2.0}},
    'batch_size': 1024,
    'num_epochs': 12,
    'input_mode': 'device',
    'steps_per_dispatch': 64,
    'eval_batch_size': 8192,
    'log_every_steps': 50,
    'progress_bar': True,
    'wandb': {'mode': 'disabled', 'tags': ()},
    'checkpoint': {'every_steps': 0, 'max_to_keep': 3, 'async_save': True},
    'parallel': {'backend': 'pmap', 'num_devices': 1},
    'diagnostics_every_steps': 200,
    'max_consecutive_nonfinite': 10,
  }
  for key, value in changes.items():
    *path, last = key.split('.')
    d = c
    for p in path:
      d = d[p]
    d[last] = value
  return c


def _trained_workdir(path, config):
  """A workdir recorded with `config` that holds a checkpoint."""
  path.mkdir(parents=True, exist_ok=True)
  record_config(path, config)
  (path / 'checkpoints' / '100').mkdir(parents=True)
  return path


# --- fingerprint -----------------------------------------------------------


def test_fingerprint_ignores_the_excluded_keys_only():
  digest, keys = fingerprint(_config())
  assert len(digest) == 64
  assert keys['optimizer.learning_rate'] == 2e-3
  assert keys['model.expert_hidden'] == [64]  # As config.json holds it.
  assert keys['dataset.task_group'] == 1
  for gone in (
    'num_epochs',
    'progress_bar',
    'log_every_steps',
    'wandb.mode',
    'checkpoint.max_to_keep',
    'eval_batch_size',
    'parallel.num_devices',
    'input_mode',
    'steps_per_dispatch',
    'dataset.data_dir',
    'dataset.manual_dir',
    'weighting.dwa.temperature',  # Not the chosen method.
  ):
    assert gone not in keys, gone
  same = _config(
    num_epochs=30,
    progress_bar=False,
    log_every_steps=1,
    eval_batch_size=512,
    input_mode='host',
    steps_per_dispatch=1,
    **{
      'wandb.mode': 'offline',
      'checkpoint.max_to_keep': 1,
      'parallel.num_devices': 8,
      'dataset.manual_dir': '/elsewhere',
      'weighting.dwa.temperature': 5.0,
    },
  )
  assert fingerprint(same)[0] == digest
  for key, value in (
    ('seed', 1),
    ('optimizer.learning_rate', 1e-2),
    ('dataset.task_group', 2),
    ('model.expert_hidden', (32,)),
    ('weighting_name', 'dwa'),
  ):
    assert fingerprint(_config(**{key: value}))[0] != digest, key


def test_fingerprint_of_the_real_config_is_json_and_excludes_its_keys():
  from configs import common

  config = common.base_config().to_dict()
  digest, keys = fingerprint(config)
  assert json.loads(json.dumps(keys)) == keys
  assert 'seed' in keys and 'optimizer.learning_rate' in keys
  assert not [k for k in keys if k.startswith(('wandb.', 'checkpoint.'))]
  # A config read back from config.json has the same fingerprint.
  assert fingerprint(json.loads(json.dumps(config)))[0] == digest


# --- check_config / record_config ------------------------------------------


def test_rerun_with_another_config_is_one_line_naming_the_keys(tmp_path):
  path = _trained_workdir(tmp_path / 'run', _config())
  before = (path / 'config.json').read_bytes()
  new = _config(seed=1, **{'optimizer.learning_rate': 0.01})
  with pytest.raises(WorkdirError) as err:
    check_config(path, new)
  msg = str(err.value)
  assert '\n' not in msg
  assert str(path) in msg
  assert 'optimizer.learning_rate 0.002 -> 0.01' in msg
  assert 'seed 0 -> 1' in msg
  assert '--workdir' in msg and 'workdir_allow_changes=True' in msg
  assert (path / 'config.json').read_bytes() == before


def test_many_differences_are_cut_short(tmp_path):
  path = _trained_workdir(tmp_path / 'run', _config())
  new = _config(
    seed=1,
    batch_size=8,
    model_name='omoe',
    **{'optimizer.learning_rate': 0.01, 'dataset.task_group': 2},
  )
  with pytest.raises(WorkdirError, match=r', \.\.\. \(2 more\);'):
    check_config(path, new)


def test_open_workdir_refuses_another_config_and_keeps_config_json(tmp_path):
  path = tmp_path / 'run'
  with wd.open_workdir(path, _config()) as w:
    assert w.chief and w.path == path
    assert json.loads((path / 'config.json').read_text())['seed'] == 0
    (path / 'results.json').write_text('{}')  # The run finished.
  before = (path / 'config.json').read_bytes()
  with pytest.raises(WorkdirError, match='dataset.task_group 1 -> 2'):
    wd.open_workdir(path, _config(**{'dataset.task_group': 2}))
  assert (path / 'config.json').read_bytes() == before
  # The lock was released by the failed open: the same config reopens.
  wd.open_workdir(path, _config()).close()


def test_num_epochs_and_other_excluded_changes_are_allowed(tmp_path, caplog):
  path = _trained_workdir(tmp_path / 'run', _config())
  new = _config(num_epochs=20, progress_bar=False, **{'wandb.mode': 'offline'})
  with caplog.at_level(logging.WARNING):
    with wd.open_workdir(path, new) as w:
      assert w.changes == {}
  recorded = json.loads((path / 'config.json').read_text())
  assert recorded['num_epochs'] == 20 and recorded['wandb']['mode'] == 'offline'
  assert json.loads((path / 'fingerprint.json').read_text())['num_epochs'] == 20
  # The cosine schedule's length follows num_epochs: said once.
  assert any('num_epochs 12 -> 20' in r.getMessage() for r in caplog.records)


def test_allow_changes_continues_and_records_the_change(tmp_path, caplog):
  path = _trained_workdir(tmp_path / 'run', _config())
  new = _config(**{'optimizer.learning_rate': 0.01})
  with caplog.at_level(logging.WARNING):
    with wd.open_workdir(path, new, allow_changes=True) as w:
      assert w.changes == {'optimizer.learning_rate': (0.002, 0.01)}
  assert any('0.002 -> 0.01' in r.getMessage() for r in caplog.records)
  record = json.loads((path / 'fingerprint.json').read_text())
  assert record['digest'] == fingerprint(new)[0]
  assert record['changes'][0]['keys'] == {
    'optimizer.learning_rate': [0.002, 0.01]
  }
  # From now on the new values are the run's.
  check_config(path, new)
  with pytest.raises(WorkdirError, match='0.01 -> 0.002'):
    check_config(path, _config())


def test_workdir_of_an_earlier_mtl_is_checked_from_config_json(tmp_path):
  path = tmp_path / 'run'
  (path / 'checkpoints' / '5').mkdir(parents=True)
  json_files.write_json(path / 'config.json', _config())  # No fingerprint.json.
  check_config(path, _config(num_epochs=1))
  with pytest.raises(WorkdirError, match='seed 0 -> 3'):
    check_config(path, _config(seed=3))


def test_a_workdir_that_saved_nothing_takes_the_new_config(tmp_path):
  path = tmp_path / 'run'
  path.mkdir()
  record_config(path, _config())  # A run that failed before a save.
  with wd.open_workdir(path, _config(seed=4)):
    pass
  assert json.loads((path / 'config.json').read_text())['seed'] == 4


def test_keys_only_one_side_has_are_not_compared(tmp_path, caplog):
  path = _trained_workdir(tmp_path / 'run', _config())
  new = _config()
  new['brand_new_key'] = 1  # A newer mtl's key.
  with caplog.at_level(logging.WARNING):
    check_config(path, new)
  assert any('brand_new_key' in r.getMessage() for r in caplog.records)


def test_checkpoints_without_a_config_record_are_refused(tmp_path):
  path = tmp_path / 'run'
  (path / 'checkpoints' / '5').mkdir(parents=True)
  with pytest.raises(WorkdirError, match='no config.json'):
    check_config(path, _config())
  check_config(path, _config(), allow_changes=True)


# --- lock ------------------------------------------------------------------

HOLD = """
import sys, time
from mtl.shell import workdir
lock = workdir.WorkdirLock(sys.argv[1]).acquire()
print('locked', flush=True)
time.sleep(120)
"""


def _holder(path):
  proc = subprocess.Popen(
    [sys.executable, '-c', HOLD, str(path)],
    stdout=subprocess.PIPE,
    text=True,
    cwd=REPO,
  )
  assert proc.stdout.readline().strip() == 'locked'
  return proc


def _dead_pid():
  proc = subprocess.Popen(['true'])
  proc.wait()
  return proc.pid


def test_second_live_process_is_refused_naming_the_holder(tmp_path, caplog):
  tmp_path.mkdir(exist_ok=True)
  proc = _holder(tmp_path)
  try:
    with pytest.raises(WorkdirError) as err:
      wd.open_workdir(tmp_path, _config())
    msg = str(err.value)
    assert '\n' not in msg
    assert f'pid {proc.pid} on host {socket.gethostname()}' in msg
    assert 'another --workdir' in msg
    assert not (tmp_path / 'config.json').exists()  # Nothing written.
  finally:
    proc.kill()
    proc.wait()
  # Killed without releasing: the kernel freed the lock; taken over.
  with caplog.at_level(logging.WARNING):
    with lock_lib.WorkdirLock(tmp_path) as lock:
      assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()
      assert lock.identity['pid'] == os.getpid()
  assert any(
    f'pid {proc.pid}' in r.getMessage() and 'taking over' in r.getMessage()
    for r in caplog.records
  )
  assert (tmp_path / '.lock').read_text() == ''  # Released cleanly.


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path, caplog):
  dead = _dead_pid()
  holder = {'pid': dead, 'host': socket.gethostname(), 'started': 'then'}
  (tmp_path / '.lock').write_text(json.dumps(holder))
  with caplog.at_level(logging.WARNING):
    with lock_lib.WorkdirLock(tmp_path):
      pass
  assert any(f'pid {dead}' in r.getMessage() for r in caplog.records)


def test_same_process_cannot_lock_twice(tmp_path):
  with (
    lock_lib.WorkdirLock(tmp_path),
    pytest.raises(WorkdirError, match='this same'),
  ):
    lock_lib.WorkdirLock(tmp_path).acquire()
  lock_lib.WorkdirLock(tmp_path).acquire().release()


@pytest.fixture
def no_flock(monkeypatch):
  def flock(fd, op):
    raise OSError(errno.ENOLCK, 'No locks available')

  monkeypatch.setattr(lock_lib.fcntl, 'flock', flock)


def _write_lock(path, **holder):
  (path / '.lock').write_text(json.dumps(holder))


def test_without_flock_a_live_pid_on_this_host_is_refused(tmp_path, no_flock):
  sleeper = subprocess.Popen(['sleep', '60'])
  try:
    _write_lock(
      tmp_path,
      pid=sleeper.pid,
      host=socket.gethostname(),
      start_ticks=lock_lib._start_ticks(sleeper.pid),
    )
    with pytest.raises(WorkdirError, match=f'pid {sleeper.pid} on host'):
      lock_lib.WorkdirLock(tmp_path).acquire()
  finally:
    sleeper.kill()
    sleeper.wait()
  # Dead now: taken over, and the file is removed on release.
  with lock_lib.WorkdirLock(tmp_path):
    held = json.loads((tmp_path / '.lock').read_text())
    assert held['pid'] == os.getpid()
  assert not (tmp_path / '.lock').exists()


def test_without_flock_a_reused_pid_is_stale(tmp_path, no_flock):
  # Our own pid, alive, but with another start time: a reused pid.
  _write_lock(
    tmp_path, pid=os.getpid(), host=socket.gethostname(), start_ticks=1
  )
  with lock_lib.WorkdirLock(tmp_path):
    pass


def test_without_flock_another_host_counts_as_dead_when_not_renewed(
  tmp_path, no_flock, caplog
):
  _write_lock(tmp_path, pid=1, host='elsewhere.example', started='then')
  with pytest.raises(WorkdirError, match='elsewhere.example') as err:
    lock_lib.WorkdirLock(tmp_path).acquire()
  assert f'{lock_lib.STALE_LOCK_SECONDS} s' in str(err.value)
  old = time.time() - lock_lib.STALE_LOCK_SECONDS - 10
  os.utime(tmp_path / '.lock', (old, old))
  with caplog.at_level(logging.WARNING):
    with lock_lib.WorkdirLock(tmp_path):
      pass
  assert any('elsewhere.example' in r.getMessage() for r in caplog.records)


# --- writability -----------------------------------------------------------


def test_workdir_that_is_a_file_is_refused(tmp_path):
  f = tmp_path / 'afile'
  f.write_text('x')
  with pytest.raises(WorkdirError, match='is a file'):
    wd.open_workdir(f, _config())
  with pytest.raises(WorkdirError, match=f'lies under {f}, which is a file'):
    wd.open_workdir(f / 'sub' / 'run', _config())
  assert f.read_text() == 'x'


def _check_as_nobody(target) -> str:
  """check_writable's error in a forked child that dropped root; '' if none.

  Forked, not exec'd: the interpreter may lie where nobody cannot read it.
  """
  read, write = os.pipe()
  with warnings.catch_warnings():  # JAX's threads: the child touches none.
    warnings.filterwarnings('ignore', 'os.fork', RuntimeWarning)
    pid = os.fork()
  if pid == 0:  # The child: only os calls and check_writable, then _exit.
    code = 0
    try:
      os.close(read)
      os.setgroups([])
      os.setgid(65534)
      os.setuid(65534)
      wd.check_writable(target)
    except WorkdirError as e:
      os.write(write, str(e).encode())
      code = 2
    except BaseException as e:
      os.write(write, f'unexpected {type(e).__name__}: {e}'.encode())
      code = 3
    finally:
      os._exit(code)
  os.close(write)
  with os.fdopen(read) as f:
    message = f.read()
  _, status = os.waitpid(pid, 0)
  assert os.waitstatus_to_exitcode(status) in (0, 2), message
  return message


def _searchable_by_others(path) -> list:
  """Adds o+x to the ancestors of `path` that lack it (pytest's temporary
  root is 0700); returns (directory, mode) pairs to restore."""
  changed = []
  for parent in reversed(path.parents):
    mode = stat.S_IMODE(parent.stat().st_mode)
    if not mode & stat.S_IXOTH:
      parent.chmod(mode | stat.S_IXOTH)
      changed.append((parent, mode))
  return changed


def test_unwritable_workdir_is_refused():
  """Root ignores permission bits: as root, checked as user nobody."""
  root = pathlib.Path(tempfile.mkdtemp())
  changed = []
  try:
    root.chmod(0o700)
    ro = root / 'ro'
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:
      # A directory on the way that nobody cannot search: one line too.
      message = _check_as_nobody(ro / 'run')
      assert 'cannot be reached: Permission denied' in message, message
      assert '\n' not in message
      root.chmod(0o755)
      changed = _searchable_by_others(root)
    for target, want in ((ro, 'is not writable'), (ro / 'run', 'cannot be')):
      if os.geteuid() == 0:
        message = _check_as_nobody(target)
      else:
        with pytest.raises(WorkdirError) as err:
          wd.check_writable(target)
        message = str(err.value)
      assert want in message and 'Permission denied' in message, message
      assert '\n' not in message
  finally:
    for parent, mode in changed:
      parent.chmod(mode)
    shutil.rmtree(root)


# --- metrics.jsonl ---------------------------------------------------------


def _rows(path):
  return [json.loads(x)['step'] for x in path.read_text().splitlines()]


def test_half_written_last_metrics_line_is_dropped(tmp_path, caplog):
  path = tmp_path / 'metrics.jsonl'
  path.write_text(
    '{"step": 1, "a": 0.5}\n{"step": 2, "a": 0.4}\n{"step": 3, "a": 0.'
  )
  with caplog.at_level(logging.WARNING):
    json_files.truncate_metrics(path, after_step=2)
  assert path.read_text() == '{"step": 1, "a": 0.5}\n{"step": 2, "a": 0.4}\n'
  assert any('half-written' in r.getMessage() for r in caplog.records)


def test_truncate_metrics_drops_later_rows_and_ends_lines(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1}\n{"step": 5}\n\n{"step": 2}')
  json_files.truncate_metrics(path, after_step=4)
  assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
  json_files.truncate_metrics(path, after_step=4)  # Nothing to do.
  assert _rows(path) == [1, 2]
  json_files.truncate_metrics(tmp_path / 'none.jsonl', after_step=0)


def test_damaged_metrics_line_in_the_middle_is_an_error(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  text = '{"step": 1}\ngarbage\n{"step": 2}\n'
  path.write_text(text)
  with pytest.raises(WorkdirError, match='line 2 is not a metrics row'):
    json_files.truncate_metrics(path, after_step=1)
  assert path.read_text() == text


def test_write_json_replaces_atomically(tmp_path):
  path = tmp_path / 'x.json'
  json_files.write_json(path, {'b': 1, 'a': (1, 2)})
  assert json.loads(path.read_text()) == {'a': [1, 2], 'b': 1}
  assert [p.name for p in tmp_path.iterdir()] == ['x.json']


def test_lock_is_released_on_sigterm_of_a_cli_like_process(tmp_path):
  """A process ended by a signal (no cleanup) leaves a lock the next run
  takes: the kernel drops flocks of dead processes."""
  proc = _holder(tmp_path)
  proc.send_signal(signal.SIGTERM)
  proc.wait()
  with lock_lib.WorkdirLock(tmp_path):
    pass
