"""The progress bar without a terminal: plain lines, at most one per period."""

import io
import time

import tqdm

from mtl.shell import console


def _bar(stream, every_s):
  return tqdm.tqdm(
    total=10,
    file=console._Lines(stream, every_s),
    ncols=60,
    leave=False,
    mininterval=0,
    miniters=1,
  )


def test_each_state_is_a_whole_line_without_carriage_returns():
  out = io.StringIO()
  bar = _bar(out, 0.0)
  for _ in range(10):
    bar.update(1)
    time.sleep(0.002)
  bar.close()
  text = out.getvalue()
  assert '\r' not in text
  lines = text.splitlines()
  assert lines and all(x.strip() for x in lines)
  # Every line is one state of the bar: 'n/10' exactly once per line.
  counts = [int(x.split('/10')[0].split()[-1]) for x in lines]
  assert counts == sorted(counts) and counts[-1] == 10


def test_no_line_before_the_period_has_passed():
  out = io.StringIO()
  bar = _bar(out, 3600.0)
  for _ in range(10):
    bar.update(1)
  bar.close()
  assert out.getvalue() == ''


def test_at_most_one_line_per_period():
  out = io.StringIO()
  lines = console._Lines(out, 0.05)
  for i in range(40):
    lines.write(f'\r{i}/40 step')
    time.sleep(0.005)
  got = out.getvalue().splitlines()
  # 40 writes over >= 0.2 s: between 1 and 0.2 / 0.05 + 1 lines.
  assert 1 <= len(got) <= 5, got
  assert all(x.endswith('/40 step') for x in got)
