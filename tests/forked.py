"""`mtl-train` started in the background as a fork of tests/cli.py's
forkserver, for the tests that signal or kill a run mid-way.

A fork of the server is a process of its own, like `python -m
mtl.shell.main`, with the same argv, environment, working directory and exit
code (tests/cli.py's `Fork`), so SIGKILL and SIGTERM reach a real process;
it only skips the ~4 s of importing JAX, Flax, Optax, Orbax, TFDS and the
trainer again. Its stderr goes to a file, read when it has ended.
"""

from tests import cli


def start(args, env: dict) -> cli.Fork:
  """`mtl-train *args` with `env`, started in the background."""
  # The server imported JAX, TFDS and tqdm with this process's settings: a
  # run must share them (tests/cli.py runs any other as a plain subprocess).
  cli._context()
  assert cli._import_time_env(env) == cli._server['import_env'], (
    'import-time settings (JAX_*, TQDM_*, TFDS_RETRY_*) differ from the server'
  )
  return cli.Fork('mtl.shell.main', args, env)
