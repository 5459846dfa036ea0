"""prefetch.prefetched: the same items in order, errors where they arose,
a worker that stops when its consumer does."""

import threading
import time

import pytest

from mtl.data.prefetch import prefetched
from mtl.errors import DataError


def test_items_in_order():
  assert list(prefetched(iter(range(1000)), depth=3)) == list(range(1000))
  assert list(prefetched(iter([]))) == []


def test_an_error_comes_after_the_items_before_it():
  def items():
    yield from range(5)
    raise DataError('t.csv: row 6 column x is empty, expected a value')

  got = []
  with pytest.raises(DataError, match=r'^t.csv: row 6 column x is empty'):
    for item in prefetched(items()):
      got.append(item)
  assert got == list(range(5))


def test_closing_stops_the_worker():
  made = []

  def items():
    for i in range(10**6):
      made.append(i)
      yield i

  it = prefetched(items(), depth=2)
  assert next(it) == 0
  it.close()
  time.sleep(0.5)
  count = len(made)
  time.sleep(0.3)
  assert len(made) == count < 10
  assert not any(t.name == 'prefetched' for t in threading.enumerate())
