"""The workdir lock: one live process writes a workdir (shell code).

See `WorkdirLock`; `mtl.shell.workdir.open_workdir` takes it.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import pathlib
import socket
import sys
import threading
import time

from mtl.errors import WorkdirError

LOCK_FILE = '.lock'


# Fallback mode only (a filesystem without flock): the holder touches the
# lock file this often, and a lock of another host counts as dead once it
# was not touched for STALE_LOCK_SECONDS (well above NFS attribute caching,
# 60 s by default, plus a missed heartbeat or two).
HEARTBEAT_SECONDS = 30
STALE_LOCK_SECONDS = 300

# Errors of flock on a filesystem that has no locks (some FUSE and NFS
# mounts): the lock falls back to O_EXCL files.
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

# Locks held by this process, by resolved path: a second lock of the same
# workdir in the same process is refused before it opens the file, because
# closing another descriptor of the file would drop the first lock where
# flock is emulated by POSIX locks (NFS).
_HELD: dict[str, 'WorkdirLock'] = {}


def _start_ticks(pid: int) -> int | None:
  """When `pid` started (clock ticks since boot), to tell a reused pid."""
  try:
    stat = pathlib.Path(f'/proc/{pid}/stat').read_text()
    return int(stat.rsplit(')', 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(holder: dict) -> bool:
  """Whether the holder's process (on this host) is still running."""
  pid = holder.get('pid')
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # Alive, another user's.
  ticks = holder.get('start_ticks')
  return ticks is None or _start_ticks(pid) in (None, ticks)


def _describe(holder: dict) -> str:
  return (
    f'pid {holder.get("pid", "?")} on host {holder.get("host", "?")} '
    f'(since {holder.get("started", "?")})'
  )


class WorkdirLock:
  """`<workdir>/.lock`, held by the one live process that writes a workdir.

  Usage: `with WorkdirLock(workdir): ...` or `acquire()` ... `release()`.

  The lock is `fcntl.flock` on the file: the kernel (or the NFS server)
  releases it when the holder dies, however it dies, so a crashed run never
  blocks the next one; on NFS a dead client's lock is freed when its lease
  expires (about 90 s for NFSv4). The file holds the holder's pid, host,
  start time and command line, for the message a second run gets; it is
  emptied on release, so a non-empty file found when taking a free lock
  means the last holder died without releasing it (a warning names it).

  Where the filesystem has no flock (ENOLCK, EOPNOTSUPP), the lock falls
  back to creating the file with O_EXCL. A lock found there is taken over,
  with a warning, when its holder is dead: on this host, its pid is not
  running (or was reused); on another host, whose processes cannot be seen,
  when the file was not touched for STALE_LOCK_SECONDS (the holder touches
  it every HEARTBEAT_SECONDS from a thread). Two runs taking over the same
  stale lock at the same moment is not excluded in that mode.

  In a multi-process JAX run only process 0 writes the workdir, so only it
  takes the lock (`open_workdir` does that).
  """

  def __init__(self, workdir):
    self.workdir = pathlib.Path(workdir).absolute()
    self.path = self.workdir / LOCK_FILE
    self.identity = None
    self._fd = None
    self._fallback = False
    self._stop = threading.Event()
    self._heartbeat = None

  def _me(self) -> dict:
    return {
      'pid': os.getpid(),
      'host': socket.gethostname(),
      'started': datetime.datetime.now().astimezone().isoformat('T', 'seconds'),
      'start_ticks': _start_ticks(os.getpid()),
      'argv': sys.argv,
    }

  def _read(self, fd=None) -> dict:
    """The holder recorded in the file; {} if empty or unreadable."""
    try:
      if fd is not None:
        raw = os.pread(fd, 1 << 16, 0)
      else:
        raw = self.path.read_bytes()
      holder = json.loads(raw.decode('utf-8', 'replace')) if raw else {}
    except (OSError, ValueError):
      return {}
    return holder if isinstance(holder, dict) else {}

  def _busy(self, holder: dict, how: str) -> WorkdirError:
    return WorkdirError(
      f'workdir {self.workdir} is in use by {_describe(holder)}: {how}; '
      'wait for that run to end, or use another --workdir'
    )

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock, or raises a one-line WorkdirError naming the holder."""
    key = str(self.path.resolve())
    if key in _HELD:
      raise self._busy(_HELD[key].identity or {}, 'this same process')
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # A directory in its place, say.
      raise WorkdirError(
        f'{self.path} cannot be opened ({e.strerror}), expected the '
        "workdir's lock file there"
      ) from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = self._read(fd)
      os.close(fd)
      raise self._busy(holder, 'its lock is held') from None
    except OSError as e:
      os.close(fd)
      if e.errno not in _NO_FLOCK:
        raise
      logging.warning(
        'no flock on %s (%s): locking the workdir with an O_EXCL file',
        self.path,
        e.strerror,
      )
      self._acquire_fallback()
    else:
      previous = self._read(fd)
      if previous:
        logging.warning(
          'taking over the lock %s of %s, which did not release it (the '
          'process died or was killed)',
          self.path,
          _describe(previous),
        )
      self._fd = fd
      self.identity = self._me()
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(self.identity).encode() + b'\n', 0)
      os.fsync(fd)
    _HELD[key] = self
    return self

  def _acquire_fallback(self) -> None:
    self._fallback = True
    self.identity = self._me()
    data = json.dumps(self.identity).encode() + b'\n'
    try:
      fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      holder = self._read()
      if holder:
        if holder.get('host') == socket.gethostname():
          if _alive(holder):
            raise self._busy(holder, 'that process is running') from None
          why = 'that process is not running'
        else:
          age = time.time() - self.path.stat().st_mtime
          if age < STALE_LOCK_SECONDS:
            raise self._busy(
              holder,
              f"its lock was renewed {age:.0f} s ago; another host's "
              f'process cannot be checked, a lock counts as dead after '
              f'{STALE_LOCK_SECONDS} s without renewal (or delete '
              f'{self.path} if that process is gone)',
            ) from None
          why = f'its lock was not renewed for {age:.0f} s'
        logging.warning(
          'taking over the stale lock %s of %s: %s',
          self.path,
          _describe(holder),
          why,
        )
      fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC)
    try:
      os.write(fd, data)
      os.fsync(fd)
    finally:
      os.close(fd)
    if self._read() != json.loads(data):  # Another run took it meanwhile.
      raise self._busy(self._read(), 'it took the lock at the same time')
    self._heartbeat = threading.Thread(
      target=self._beat, name='workdir-lock-heartbeat', daemon=True
    )
    self._heartbeat.start()

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      with contextlib.suppress(OSError):
        os.utime(self.path)

  def release(self) -> None:
    """Releases the lock (idempotent); the file stays, emptied."""
    key = str(self.path.resolve())
    if _HELD.get(key) is self:
      del _HELD[key]
    if self._fallback:
      self._stop.set()
      if self._heartbeat is not None:
        self._heartbeat.join()
        self._heartbeat = None
      if self._read() == self.identity:
        with contextlib.suppress(OSError):
          self.path.unlink()
      self._fallback = False
    elif self._fd is not None:
      with contextlib.suppress(OSError):
        os.ftruncate(self._fd, 0)
      os.close(self._fd)  # Releases the flock.
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
