"""Writes tests/file_order.txt: the test files, slowest first, from a
`pytest --durations=0` log (the sum of each file's setup, call and teardown
seconds). tests/conftest.py runs the files in that order: with `--dist
loadfile` a worker takes one file at a time, so a slow file started last
leaves the other worker idle at the end (longest first is the classic
greedy schedule).

  pytest -q -n auto --dist loadfile -m 'not slow' --durations=0 > durations.log
  python tests/file_order.py durations.log
"""

import collections
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
LINE = re.compile(r'^([0-9.]+)s (?:call|setup|teardown) +(\S+?)::')
MIN_SECONDS = 2.0  # Files below this keep their collection order, after.


def main(log: str) -> None:
  seconds = collections.Counter()
  for line in pathlib.Path(log).read_text().splitlines():
    m = LINE.match(line)
    if m:
      seconds[m[2]] += float(m[1])
  if not seconds:
    raise SystemExit(f'{log}: no --durations lines ("0.50s call  path::test")')
  slow = [(s, f) for f, s in seconds.most_common() if s >= MIN_SECONDS]
  lines = [
    '# Test files, slowest first (seconds of setup + call + teardown on the',
    '# 2-core CI machine); written by tests/file_order.py from a --durations=0',
    '# log. tests/conftest.py runs them in this order, the others after.',
    *(f'{f}  # {s:.1f}' for s, f in slow),
  ]
  (HERE / 'file_order.txt').write_text('\n'.join(lines) + '\n')
  total = sum(seconds.values())
  print(f'tests/file_order.txt: {len(slow)} files, {total:.0f} s in all')


if __name__ == '__main__':
  main(*sys.argv[1:])
