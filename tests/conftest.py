"""Test setup: 8 emulated CPU devices, set before JAX is imported anywhere.

Tests that need another device count, or several processes, start a
subprocess with their own XLA_FLAGS.

The suite is hermetic: every cache a test or its subprocesses write (TFDS's
prepared data, W&B's and matplotlib's settings and caches) goes under
pytest's temporary directory, through environment variables the subprocesses
inherit, never to ~/tensorflow_datasets, ~/.cache or the repository.

JAX's persistent compilation cache is on for the session, shared by the
pytest-xdist workers and every subprocess they start: most tests run the same
small models through `mtl-train` in a fresh process, and a cached executable
halves such a run (smoke: 7.5 s cold, 3.5 s warm). A size limit turns on the
cache's file lock (the `filelock` package), so a process never reads an entry
another one is still writing. A cached executable is the compiled one,
serialised: bitwise comparisons between runs hold either way.

Only programs that took a second or more to compile are cached. With that
lock, every write lists and reads the whole cache (JAX's LRU eviction scan):
caching everything made ~2,500 entries of small programs, each write
scanning up to all of them under the lock, and cost more than their
recompilation saved (2 workers, this 2-core machine, pytest's wall time:
775 s caching every program, 660 s from 0.3 s, 595 s from 1 s with 205
more tests).
"""

import os
import pathlib
import sys
import tempfile

# LLVM at -O0 (XLA's own HLO passes all still run): the suite compiles
# hundreds of small programs and runs few steps of each, and compiling takes
# half the time at -O0 (tests/core/test_task_grads.py: 37.6 -> 18.9 s of CPU);
# a 2-epoch census run is 20 % slower. Every process of the suite gets the
# same flag (tests/cli.py's one_device_env keeps it), so runs compare with
# each other bit for bit; against the oracles it changes nothing (no fast
# math either way).
#
# And XLA's legacy CPU emitters in place of its (default) MLIR fusion
# emitters: the whole suite then takes about half the CPU time (2 workers
# on 2 cores: 1,044 -> 558 CPU-s, 684 -> 398 s wall). Bit-for-bit
# comparisons between runs of the same program hold either way; the few
# tests that two different programs (sharded and replicated tables, vmapped
# and looped members) agree bit for bit take the fusion emitters for their
# own compilations (the `fusion_emitters` fixture): under the legacy ones
# those programs differ in the last bit.
os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '')
  + ' --xla_backend_optimization_level=0'
  + ' --xla_cpu_use_fusion_emitters=false'
  + ' --xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('WANDB_SILENT', 'true')

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]

# Environment variable -> folder under the session's temporary directory.
# 'tfds-shared' is also the folder tests/data's loader tests share. TMPDIR:
# TFDS leaves an empty tempfile.mkdtemp('tfds') folder behind each time it
# builds an unprepared dataset.
CACHES = {
  'TFDS_DATA_DIR': 'tfds-shared',
  'TMPDIR': 'tmp',
  'WANDB_DIR': 'wandb',
  'WANDB_CACHE_DIR': 'wandb/cache',
  'WANDB_CONFIG_DIR': 'wandb/config',
  'WANDB_DATA_DIR': 'wandb/data',
  'MPLCONFIGDIR': 'matplotlib',
}

# JAX reads these when it is imported: subprocesses get them from the
# environment, this process from jax.config (below) if JAX is imported first.
COMPILATION_CACHE = {
  'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': 1.0,
  'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': 0,
  'JAX_COMPILATION_CACHE_MAX_SIZE': 4 << 30,
}


def _session_root(tmp_path_factory) -> pathlib.Path:
  """The temporary directory all pytest-xdist workers of this run share."""
  root = tmp_path_factory.getbasetemp()
  return root.parent if os.environ.get('PYTEST_XDIST_WORKER') else root


@pytest.fixture(scope='session', autouse=True)
def hermetic(tmp_path_factory) -> dict[str, pathlib.Path]:
  """Points every cache at the session's temporary directory.

  Set as environment variables, so subprocesses inherit them. TFDS reads
  TFDS_DATA_DIR once, when it is imported (tfds.core.constants.DATA_DIR, its
  default data_dir), and tempfile reads TMPDIR once: in this process, where a
  test module may have imported TFDS already, both are patched too.
  """
  root = tmp_path_factory.getbasetemp()
  dirs = {name: root / folder for name, folder in CACHES.items()}
  with pytest.MonkeyPatch.context() as mp:
    for name, path in dirs.items():
      path.mkdir(parents=True, exist_ok=True)
      mp.setenv(name, str(path))
    constants = sys.modules.get('tensorflow_datasets.core.constants')
    if constants is not None:
      mp.setattr(constants, 'DATA_DIR', str(dirs['TFDS_DATA_DIR']))
    mp.setattr(tempfile, 'tempdir', str(dirs['TMPDIR']))
    cache = _session_root(tmp_path_factory) / 'jax-compilation-cache'
    cache.mkdir(exist_ok=True)
    settings = {'JAX_COMPILATION_CACHE_DIR': str(cache), **COMPILATION_CACHE}
    for name, value in settings.items():
      mp.setenv(name, str(value))
    if 'jax' in sys.modules:
      import jax

      for name, value in settings.items():
        jax.config.update(name.lower(), value)
    yield dirs


@pytest.fixture
def fusion_emitters(monkeypatch):
  """XLA CPU's default emitters for what this test compiles.

  The suite compiles with XLA's legacy CPU emitters (XLA_FLAGS above); a
  test that two different programs agree bit for bit (sharded and
  replicated tables, vmapped and looped members) holds under the emitters
  users run, the fusion emitters, and asks for them here: every compilation
  of the test gets xla_cpu_use_fusion_emitters=True, as `jax.jit`'s own
  compiler_options would pass it (jax has no process-wide setting but
  XLA_FLAGS, read once).
  """
  from jax._src import compiler

  get = compiler.get_compile_options

  def with_fusion_emitters(*args, env_options_overrides=None, **kwargs):
    overrides = {'xla_cpu_use_fusion_emitters': True}
    overrides.update(env_options_overrides or {})
    return get(*args, env_options_overrides=overrides, **kwargs)

  monkeypatch.setattr(compiler, 'get_compile_options', with_fusion_emitters)


@pytest.fixture(scope='session')
def data_dir() -> pathlib.Path:
  """The directory of real raw datasets ($MTL_DATA_DIR, as .ci/run sets it)."""
  value = os.environ.get('MTL_DATA_DIR')
  if not value:
    pytest.fail(
      'MTL_DATA_DIR is not set: point it at the raw datasets '
      '(for example MTL_DATA_DIR=../shared/data), as .ci/run does'
    )
  path = pathlib.Path(value).resolve()
  if not path.is_dir():
    pytest.fail(f'MTL_DATA_DIR={value} is not a directory')
  return path


@pytest.fixture(scope='session')
def tfds_dir(hermetic) -> pathlib.Path:
  """The session's TFDS data directory ($TFDS_DATA_DIR, TFDS's default)."""
  return hermetic['TFDS_DATA_DIR']


@pytest.fixture(scope='session')
def census_tfds_dir(hermetic, data_dir) -> pathlib.Path:
  """The session's TFDS data directory with census_income prepared in it.

  Prepared once per session from $MTL_DATA_DIR; tests that run census pass
  it on (--config.dataset.data_dir=...) instead of preparing their own.
  Tests of the preparation itself use a directory of their own.
  """
  from mtl.data import census_income

  path = hermetic['TFDS_DATA_DIR']
  census_income.prepare(data_dir=path)
  return path


# The test files, slowest first (tests/file_order.txt, written by
# tests/file_order.py from a --durations=0 log): with `--dist loadfile` a
# worker takes one file at a time in collection order, so a slow file
# collected last leaves the other worker idle at the end.
SLOW_FIRST = tuple(
  line.split('#')[0].strip()
  for line in (REPO / 'tests/file_order.txt').read_text().splitlines()
  if line.split('#')[0].strip()
)

# Tests marked `slow` here rather than in their files: the end-to-end and
# multi-device tests that took 5 s or more within the whole suite on the
# 2-core CI machine (`--durations=0`), outside .ci/run's budget; `pytest -m
# slow` runs them.
SLOW_IN_CI = frozenset(
  line.strip()
  for line in (REPO / 'tests/slow_in_ci.txt').read_text().splitlines()
  if line.strip() and not line.startswith('#')
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  """Marks SLOW_IN_CI slow (before `-m` selects); slow files first, each
  file's tests in their own order (stable). On a whole-suite run, a
  tests/slow_in_ci.txt line that names no test is an error, so a renamed
  test cannot leave both runs unnoticed."""
  for item in items:
    if item.nodeid in SLOW_IN_CI:
      item.add_marker(pytest.mark.slow)
  whole = not config.getoption('file_or_dir') and not config.option.keyword
  missing = SLOW_IN_CI - {item.nodeid for item in items}
  if whole and missing:
    raise pytest.UsageError(
      f'tests/slow_in_ci.txt names {len(missing)} test(s) that were not '
      f'collected, e.g. {sorted(missing)[0]}'
    )
  gone = [f for f in SLOW_FIRST if not (REPO / f).is_file()]
  if whole and gone:
    raise pytest.UsageError(
      f'tests/file_order.txt names {len(gone)} file(s) that do not exist, '
      f'e.g. {gone[0]}: rerun tests/file_order.py'
    )
  rank = {name: i for i, name in enumerate(SLOW_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split('::')[0], len(rank)))
