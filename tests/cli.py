"""Runs mtl's command lines as a user does, minus the import time.

`run(args)` is `subprocess.run([python, -m, mtl.shell.main, *args])` with
output captured: the same argv, environment, working directory, exit code,
stdout and stderr. A process that imports JAX, Flax, Optax and Orbax spends
about 2 s on it, and the suite starts well over a hundred of them (the
bad-input corpus alone makes 65). So each pytest worker keeps one
multiprocessing *forkserver* that has imported those libraries and mtl's
command-line module once; every run is a fresh fork of it, which then sets
the run's environment and directory, redirects its stdout and stderr to
files and calls the entry point (`mtl.shell.main:run`, what `mtl-train`
calls). It ends like an interpreter: atexit handlers and non-daemon threads
are run and joined, then the process exits with the entry point's code.

What the server preloads is imported once: JAX, Flax, Optax, Orbax, TFDS,
pandas and mtl's trainer (about 1.2 s a run of TFDS, pandas and the trainer
alone, paid by every case of the bad-input corpus). What of those reads the
environment when it is imported is handled: TFDS's default data directory
($TFDS_DATA_DIR) is read again in the run, and a run whose other
import-time settings (JAX_*, TQDM_*, TFDS_RETRY_*) differ from the server's,
or that asks for `fresh=True`, is a plain subprocess. So is anything that
signals or kills its process (tests/shell/test_resume.py,
tests/data/test_streaming.py
and the launch tests start those themselves). XLA_FLAGS is read when the
backend starts, in the run, so device counts differ freely between runs.
"""

import atexit
import multiprocessing
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import traceback

REPO = pathlib.Path(__file__).resolve().parents[1]
ENTRY_POINTS = {
  'mtl.shell.main': 'run',  # mtl-train
  'mtl.shell.evaluate': 'run',  # mtl-eval
  'mtl.shell.predict': 'run',  # mtl-predict
  'mtl.shell.export': 'run',  # mtl-export
  'mtl.search.sweep': 'run',  # mtl-sweep
}
PRELOAD = [
  'numpy',
  'jax',
  'jax.numpy',
  'flax.linen',
  'optax',
  'orbax.checkpoint',
  'ml_collections',
  'absl.app',
  'mtl.shell.main',
  'tensorflow_datasets',
  'mtl.shell.trainer',
]
# Settings the preloaded modules read when they are imported.
IMPORT_TIME_ENV = ('JAX_', 'TQDM_', 'TFDS_RETRY_')
DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'
OPT_LEVEL_FLAG = '--xla_backend_optimization_level'
FUSION_EMITTERS_FLAG = '--xla_cpu_use_fusion_emitters'
_server = {}


def _context():
  """This process's forkserver context, made with its import-time env."""
  if not _server:
    ctx = multiprocessing.get_context('forkserver')
    ctx.set_forkserver_preload(PRELOAD)
    _server['ctx'] = ctx
    _server['import_env'] = _import_time_env(os.environ)
  return _server['ctx']


def one_device_env(*, optimized: bool = False, **overrides) -> dict:
  """This process's environment for a plain one-device run: XLA_FLAGS
  without the 8 emulated devices of tests/conftest.py (the optimisation
  level it sets stays, so runs compare with each other bit for bit).

  optimized: also without conftest's -O0 and legacy CPU emitters (XLA's
  defaults), for a run whose time goes to executing steps rather than
  compiling them (a census epoch of PLE: 21.4 s at -O0, 13.4 s at XLA's
  default, compile cache warm; cold 28.6 vs 24.0 s). Its numbers then
  differ from the other runs' in the last bits.
  """
  env = dict(os.environ, **overrides)
  flags = env.get('XLA_FLAGS', '').split()
  drop = (DEVICE_COUNT_FLAG,) + (
    (OPT_LEVEL_FLAG, FUSION_EMITTERS_FLAG) if optimized else ()
  )
  env['XLA_FLAGS'] = ' '.join(f for f in flags if not f.startswith(drop))
  return env


def _import_time_env(env) -> dict:
  return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_ENV)}


def _child(module, argv, env, cwd, out, err, patch, code_path):
  """In the fork: become the command `argv` and exit with its code, which
  it also writes to `code_path` (see `run`)."""
  os.environ.clear()
  os.environ.update(env)
  from tensorflow_datasets.core import constants

  constants.DATA_DIR = constants.get_default_data_dir()  # Read on import.
  os.chdir(cwd)
  sys.path[0] = str(cwd)  # `python -m` puts the working directory first.
  tempfile.tempdir = None  # Read TMPDIR again.
  for fd, path in ((1, out), (2, err)):
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(handle, fd)
    os.close(handle)
  sys.argv = argv
  code = 0
  try:
    if patch:
      exec(patch, {'__name__': '__patch__'})
    module = __import__(module, fromlist=['_'])
    getattr(module, ENTRY_POINTS[module.__name__])()
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      code = e.code or 0
    else:
      print(e.code, file=sys.stderr)
      code = 1
  except BaseException:
    traceback.print_exc()
    code = 1
  try:
    threading._shutdown()  # What the interpreter does on exit: join
    atexit._run_exitfuncs()  # non-daemon threads, run atexit handlers.
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    pathlib.Path(code_path).write_text(str(code))
    os._exit(code)


def run(
  args,
  *,
  env: dict | None = None,
  cwd=REPO,
  timeout: float = 300,
  module: str = 'mtl.shell.main',
  fresh: bool = False,
  patch: str = '',
) -> subprocess.CompletedProcess:
  """`python -m <module> *args` with text output captured (see above).

  patch: Python source run in the process before the entry point (a test
  that makes mtl fail on purpose); the plain subprocess runs it with -c.
  """
  env = dict(os.environ if env is None else env)
  args = [str(a) for a in args]
  command = [sys.executable, '-m', module, *args]
  if patch:
    entry = f'import {module} as m; m.{ENTRY_POINTS[module]}()'
    command = [sys.executable, '-c', f'{patch}\n{entry}', *args]
  ctx = None if fresh else _context()
  if ctx is None or _import_time_env(env) != _server['import_env']:
    return subprocess.run(
      command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
  fork = Fork(module, args, env, cwd, patch)
  try:
    code = fork.wait(timeout, command)
    return subprocess.CompletedProcess(
      command, code, fork.stdout(), fork.stderr()
    )
  finally:
    fork.close()


class Fork:
  """`module`'s entry point with `args`, started as a fork of this worker's
  server: its own process, so signals reach it (tests/forked.py starts
  runs in the background this way). Its output goes to files, read when
  asked."""

  def __init__(self, module, args, env: dict, cwd=REPO, patch: str = ''):
    self._tmp = tempfile.TemporaryDirectory()
    tmp = pathlib.Path(self._tmp.name)
    self._out, self._err = tmp / 'stdout', tmp / 'stderr'
    self._code = tmp / 'exit_code'
    argv = [str(pathlib.Path(REPO, *module.split('.'))) + '.py', *args]
    self._process = _context().Process(
      target=_child,
      args=(
        module,
        [str(a) for a in argv],
        dict(env),
        str(cwd),
        str(self._out),
        str(self._err),
        patch,
        str(self._code),
      ),
    )
    self._process.start()
    self.pid = self._process.pid

  def poll(self):
    """The exit code, or None while it runs."""
    return None if self._process.exitcode is None else self._exit_code()

  def kill(self):
    self._process.kill()  # SIGKILL.

  def send_signal(self, signum):
    os.kill(self.pid, signum)

  def wait(self, timeout: float, command=('mtl-train',)) -> int:
    """The exit code; killed, and TimeoutExpired, after `timeout` s."""
    self._process.join(timeout)
    if self._process.exitcode is None:
      self.kill()
      self._process.join()
      raise subprocess.TimeoutExpired(list(command), timeout)
    return self._exit_code()

  def _exit_code(self) -> int:
    # The code the child wrote just before os._exit, if it got there: the
    # forkserver under load sometimes loses a child's exit status and
    # multiprocessing then reports 255 (CPython issue #140867, 'forkserver
    # fails silently under load causing Popen.poll() to return 255'). Seen
    # once in CI: a case that printed its one error line, so exited 2, came
    # back with another code. A child killed before it wrote the file keeps
    # the status the forkserver sent (-signal).
    if self._code.exists():
      return int(self._code.read_text())
    return self._process.exitcode

  def stdout(self) -> str:
    return _read(self._out)

  def stderr(self) -> str:
    return _read(self._err)

  def close(self):
    if self._process.exitcode is None:
      self.kill()
      self._process.join()
    self._tmp.cleanup()


def _read(path: pathlib.Path) -> str:
  return path.read_text(errors='replace') if path.exists() else ''
