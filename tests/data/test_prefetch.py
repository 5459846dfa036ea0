"""prefetch.prefetched and ordered_map: the same items in order, errors
where they arose, workers that stop when their consumer does."""

import threading
import time

import pytest

from mtl.data.prefetch import ordered_map, prefetched
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
  # Workers of other tests' failed preparations may linger until the
  # garbage collector closes their generators: only this one counts.
  before = set(threading.enumerate())
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
  after = set(threading.enumerate()) - before
  assert not any(t.name == 'prefetched' for t in after)


@pytest.mark.parametrize('workers', [1, 2, 4])
def test_ordered_map_keeps_the_order_of_uneven_work(workers):
  def slow_square(i):
    time.sleep(0.002 * (i % 3 == 0))  # Later items finish first.
    return i * i, threading.current_thread().name

  got = list(ordered_map(slow_square, range(40), workers))
  assert [v for v, _ in got] == [i * i for i in range(40)]
  names = {name for _, name in got}
  if workers == 1:
    assert names == {threading.current_thread().name}
  else:
    assert 1 < len(names) <= workers
    assert all(name.startswith('ordered_map') for name in names)


def test_ordered_map_raises_the_first_error_in_order():
  def check(i):
    if i in (7, 5):
      time.sleep(0.05 * (i == 5))  # Item 7 fails first in time.
      raise DataError(f't.csv: row {i + 1} column x is empty, expected a value')
    return i

  got = []
  with pytest.raises(DataError, match=r'^t.csv: row 6 column x'):
    for item in ordered_map(check, range(20), workers=3):
      got.append(item)
  assert got == list(range(5))


def test_ordered_map_draws_at_most_depth_items_ahead():
  drawn = []

  def items():
    for i in range(1000):
      drawn.append(i)
      yield i

  it = ordered_map(lambda i: i, items(), workers=2, depth=3)
  assert next(it) == 0
  assert len(drawn) == 3
  it.close()
  assert len(drawn) == 3
