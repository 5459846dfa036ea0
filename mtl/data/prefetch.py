"""An iterator's items made ahead, in a worker thread.

The table builder reads a chunk (Arrow), encodes it (Arrow, numpy) and
serialises and writes it (numpy, array_record): mostly work that releases
the GIL. `prefetched` lets one stage make its next items while the next
stage uses the current one, so the stages share the machine's cores;
`ordered_map` runs one stage on several items at once (the encoding of
chunks, each a function of its chunk alone). The items come in their
order; an exception the iteration (or the function) raises is raised where
its item would have come, unchanged, so the first bad item in order is the
one named, as one thread would.
"""

import collections
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

_POLL_SECONDS = 0.1


def prefetched(items: Iterable, depth: int = 2) -> Iterator:
  """The items of `items` in order, each made by a worker thread up to
  `depth` items ahead of its use. Closing the generator (or dropping it)
  stops the worker at its next item."""
  ready = queue.Queue(depth)
  stop = threading.Event()

  def offer(entry) -> bool:
    """Queues `entry` unless stopped first; whether it was queued."""
    while not stop.is_set():
      try:
        ready.put(entry, timeout=_POLL_SECONDS)
        return True
      except queue.Full:
        continue
    return False

  def work():
    try:
      for item in items:
        if not offer((True, item)):
          return
      end = (False, None)
    except BaseException as e:  # noqa: BLE001 -- raised by the consumer.
      end = (False, e)
    offer(end)

  worker = threading.Thread(target=work, daemon=True, name='prefetched')
  worker.start()
  try:
    while True:
      more, item = ready.get()
      if not more:
        if item is not None:
          raise item
        return
      yield item
  finally:
    stop.set()


def ordered_map(
  fn: Callable, items: Iterable, workers: int, depth: int | None = None
) -> Iterator:
  """fn(item) of each item, in order, computed by `workers` threads, at
  most `depth` (default 2 * workers) items ahead of their use; `items` is
  drawn from the calling thread. workers <= 1 maps in the caller."""
  if workers <= 1:
    yield from map(fn, items)
    return
  depth = depth or 2 * workers
  with concurrent.futures.ThreadPoolExecutor(
    workers, thread_name_prefix='ordered_map'
  ) as pool:
    pending = collections.deque()
    try:
      for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    finally:
      for future in pending:
        future.cancel()
