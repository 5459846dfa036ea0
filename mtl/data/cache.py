"""The prepared-data cache: read it back, or prepare it again from the raw
files when it cannot be used.

A real dataset's encoded splits are a TFDS directory,
<data_dir>/<name>/<config>/<version> (census_income_builder.py,
csv_builder.py). `load` reads it back and builds the Dataset; the cache
cannot be used when

- it is unreadable: dataset_info.json missing, empty or not JSON, a record
  file truncated or overwritten (array_record checks its blocks), a record
  missing or of the wrong size; or
- the data read back fails validation: rows out of raw-file order, a
  feature that copies a label, one label class only, ids outside their
  vocabulary (a cache prepared from raw files that were fixed since).

Preparing holds an exclusive lock on `<config dir>/.prepare.lock`
(`preparing`): a second process that finds the same cache missing (two
runs of one sweep) waits, then reads what the first prepared, instead of
preparing it too and failing to move its finished directory over the
first's. Under the lock, a directory that TFDS was preparing into when
its run was killed (`incomplete.*`) is deleted before preparing again.

Then, when the raw files are there, the directory is deleted and prepared
again from them, with a warning naming it; if the fresh data still fails,
its error is the answer, now about the raw files. When the raw files are not
there (or on a process other than 0 of a multi-process run, which must not
rebuild what the others read), one DataError names the directory to delete
and what went wrong.
"""

import contextlib
import fcntl
import pathlib
import shutil
from collections.abc import Callable
from typing import TypeVar

import tensorflow_datasets as tfds
from absl import logging

from mtl.errors import ConfigError, DataError

T = TypeVar('T')


class Unreadable(DataError):
  """The cache directory `path` cannot be read (`reason`)."""

  def __init__(self, path, reason: str):
    super().__init__(f'{path}: {reason}')
    self.path = pathlib.Path(path)
    self.reason = reason


def describe(error: BaseException, limit: int = 300) -> str:
  """An exception as a short line: its message, with its type unless it
  is a DataError (whose message says it all)."""
  text = ' '.join(str(error).split())
  if not isinstance(error, DataError):
    text = f'{type(error).__name__}: {text}' if text else type(error).__name__
  return text if len(text) <= limit else text[: limit - 3] + '...'


class _NamesItsCache:
  """A builder whose damaged cache fails construction as `Unreadable`.

  TFDS reads dataset_info.json when a builder is made: a damaged file
  raises there (UnicodeDecodeError, a JSON error), before the builder can
  say where its cache is. This names the directory instead.
  """

  def __init__(self, **kwargs):
    try:
      super().__init__(**kwargs)
    except Exception as e:
      path = getattr(self, '_data_dir', None)  # Set before the info read.
      if path is None:
        raise
      raise Unreadable(path, describe(e)) from e


class Builder(
  _NamesItsCache, tfds.core.GeneratorBasedBuilder, skip_registration=True
):
  """A generator-based builder (examples through TFDS's writer, which
  holds a split in memory up to 1 GiB, then spills it through TensorFlow):
  for splits that fit in memory."""


class ShardBuilder(
  _NamesItsCache, tfds.core.ShardBasedBuilder, skip_registration=True
):
  """A shard-based builder: each shard written straight from its generator,
  in order, with no shuffle buffer, so a split of any size is prepared in
  bounded memory and without TensorFlow (table_builder.py)."""


@contextlib.contextmanager
def preparing(path: pathlib.Path):
  """Holds the exclusive preparation lock of the cache directory `path`
  (module docstring) while the context is open."""
  lock = pathlib.Path(path).parent / '.prepare.lock'
  lock.parent.mkdir(parents=True, exist_ok=True)
  with open(lock, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _clear_incomplete(path: pathlib.Path) -> None:
  """Deletes the directories TFDS prepares into (`incomplete.*` beside
  `path`) that a killed run left: under the lock none is in use."""
  for stale in pathlib.Path(path).parent.glob('incomplete.*'):
    logging.warning('deleting %s, left by a run that was stopped', stale)
    shutil.rmtree(stale, ignore_errors=True)


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool | None:
  """True: a complete cache; False: none; None: a directory that holds
  files but no usable dataset_info.json (an interrupted or damaged one)."""
  path = pathlib.Path(builder.data_path)
  info = path / 'dataset_info.json'
  if info.is_file() and builder.info.splits:
    return True
  if path.is_dir() and any(path.iterdir()):
    return None
  return False


def load(
  make_builder: Callable[[], tfds.core.DatasetBuilder],
  prepare: Callable[[tfds.core.DatasetBuilder], None],
  read: Callable[[tfds.core.DatasetBuilder], T],
  *,
  name: str,
  raw_missing: Callable[[], list[str]],
  rebuild: bool = True,
) -> T:
  """`read(builder)` of a prepared cache, preparing or re-preparing it.

  Args:
    make_builder: makes the dataset's builder (its data_dir holds the cache).
    prepare: prepares the cache from the raw files (raises DataError or
      DataFileNotFound about them).
    read: reads the cache back and validates it: the Dataset. A ConfigError
      it raises is a keyword's fault and passes through; any other error of
      a cached directory means the cache cannot be used.
    name: the dataset's name, for messages.
    raw_missing: the raw files that are missing (all of them if their
      folder is unknown); [] when a rebuild can proceed.
    rebuild: False on processes that must not rebuild (not process 0).
  """
  problem = None
  try:
    builder = make_builder()
  except Unreadable as e:
    builder, path, problem = None, e.path, e.reason
  else:
    path = pathlib.Path(builder.data_path)
    state = is_prepared(builder)
    if state:
      try:
        return read(builder)
      except ConfigError:
        raise
      except Exception as e:  # noqa: BLE001 -- any failure of a cache.
        problem = describe(e)
    elif state is None:
      problem = 'it has files but no dataset_info.json'
  if problem is not None:
    missing = raw_missing() if rebuild else []
    if missing or not rebuild:
      why = (
        f'the raw files to prepare it again are missing ({", ".join(missing)})'
        if rebuild
        else 'only process 0 prepares data'
      )
      raise DataError(
        f'{name}: the prepared data in {path} cannot be used ({problem}); '
        f'{why}: delete {path} and prepare it again from the raw files'
      )
    logging.warning(
      '%s: the prepared data in %s cannot be used (%s); preparing it again '
      'from the raw files',
      name,
      path,
      problem,
    )
    shutil.rmtree(path)
  return read(prepare_once(make_builder, prepare, path))


def prepare_once(make_builder, prepare, path) -> tfds.core.DatasetBuilder:
  """The builder of cache directory `path`, prepared by `prepare` under
  its lock unless another process prepared it meanwhile."""
  with preparing(path):
    builder = make_builder()  # Another process may have prepared it.
    if not is_prepared(builder):
      _clear_incomplete(path)
      prepare(builder)
  return builder
