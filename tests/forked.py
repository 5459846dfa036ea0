"""`mtl-train` started in the background as a fork of tests/cli.py's
forkserver, for the tests that signal or kill a run mid-way.

A fork of the server is a process of its own, like `python -m
mtl.shell.main`, with the same argv, environment, working directory and exit
code (tests/cli.py's `_child`), so SIGKILL and SIGTERM reach a real process;
it only skips the ~4 s of importing JAX, Flax, Optax, Orbax, TFDS and the
trainer again. Its stderr goes to a file, read when it has ended.
"""

import os
import pathlib
import signal
import subprocess
import tempfile

from tests import cli


class Run:
  """A background `mtl-train *args` (see `start`)."""

  def __init__(self, args, env: dict, cwd=cli.REPO):
    # The server imported JAX, TFDS and tqdm with this process's settings:
    # a run must share them (tests/cli.py runs any other as a plain
    # subprocess).
    ctx = cli._context()
    assert cli._import_time_env(env) == cli._server['import_env'], (
      'import-time settings (JAX_*, TQDM_*, TFDS_RETRY_*) differ from the '
      'server'
    )
    self._tmp = tempfile.TemporaryDirectory()
    tmp = pathlib.Path(self._tmp.name)
    self._err, self._code = tmp / 'stderr', tmp / 'exit_code'
    module = 'mtl.shell.main'
    argv = [str(pathlib.Path(cli.REPO, *module.split('.'))) + '.py']
    argv += [str(a) for a in args]
    self._process = ctx.Process(
      target=cli._child,
      args=(
        module,
        argv,
        dict(env),
        str(cwd),
        str(tmp / 'stdout'),
        str(self._err),
        '',
        str(self._code),
      ),
    )
    self._process.start()
    self.pid = self._process.pid

  def poll(self):
    """The exit code, or None while it runs."""
    return self._process.exitcode

  def kill(self):
    self._process.kill()  # SIGKILL.

  def send_signal(self, signum: signal.Signals):
    os.kill(self.pid, signum)

  def wait(self, timeout: float) -> int:
    self._process.join(timeout)
    if self._process.exitcode is None:
      self.kill()
      self._process.join()
      raise subprocess.TimeoutExpired(['mtl-train'], timeout)
    # The code the run wrote before exiting wins (tests/cli.py: the
    # forkserver may lose it); a killed run has none, -signal then.
    if self._code.exists():
      return int(self._code.read_text())
    return self._process.exitcode

  def stderr(self) -> str:
    return self._err.read_text(errors='replace') if self._err.exists() else ''

  def close(self):
    if self._process.exitcode is None:
      self.kill()
      self._process.join()
    self._tmp.cleanup()


def start(args, env: dict) -> Run:
  """`mtl-train *args` with `env`, started in the background."""
  return Run(args, env)
