"""A generated short-video log with known interests, durations and sessions.

Watch time carries a duration bias:
a longer video gets more watch time whatever the user's interest in it, the
confounder of Zhan et al., "Deconfounding Duration Bias in Watch-time
Prediction for Video Recommendation" (D2Q), KDD 2022. Sessions go on with a
probability that rises with engagement, so session depth (the schema kind
'session', mtl/data/schema.py) is predictable. Every draw's truth is a
column, so a model's metrics can be set against an oracle's.

The world, from default_rng(seed):

  interest[u, c] = INTEREST_SCALE * <p_u, q_c> / sqrt(RANK),
                   p_u, q_c ~ N(0, I_RANK)      (user u, category c)
  stamina[u]     ~ U(STAMINA_LOW, STAMINA_HIGH)
  category[v]    balanced over the categories, shuffled
  duration[v]    = clip(round(exp(N(DURATION_MU, DURATION_SIGMA)), 1),
                   DURATION_MIN, DURATION_MAX) seconds (log-normal)
  quality[v]     ~ N(0, QUALITY_SD)

A session (chunk c's draws from default_rng([seed, c])): a user u uniform
over the users; at each impression a category c ~ (1 - EXPLORE) *
softmax(interest[u]) + EXPLORE / C (the feed leans to the user's
interests), a video v uniform within c, and

  f  = sigmoid(BIAS + interest[u, c] + quality[v]
               - LENGTH_PENALTY * (log duration[v] - DURATION_MU))
  F  ~ Beta(KAPPA f, KAPPA (1 - f))          the watched fraction, E[F] = f
  watch_time = duration[v] * F               E = duration[v] * f
  continues ~ Bernoulli(stamina[u] + ENGAGEMENT * F)

so the depth truth before the outcome is P(continues | u, v) = stamina[u] +
ENGAGEMENT * f. A session's rows are consecutive in time (the next row
starts ceil(watch_time) + 1 s later, at most DURATION_MAX + 1 s); the next
session (any user's) starts IDLE + Exp(SESSION_GAP) s after the last row,
so only gaps between sessions exceed SESSION_GAP and the schema's
'session' kind with gap=SESSION_GAP recovers the draws exactly.

Columns of each row (in time order):

  time, user_id, video_id, category, duration   the impression (inputs)
  history     the user's last history_len videos before this row, oldest
              first, '|'-separated (empty for a user's first row)
  watch_time  seconds (the label)
  session_id, true_interest (interest[u, c]), true_expected_watch_time
  (duration * f), true_continue_prob (stamina + ENGAGEMENT * f),
  true_continues (the draw)                      the truth: never inputs

The first `rows` rows are <folder>/train.parquet, the next `eval_rows`
validation, the rest test: `eval_rows` and then the rest of the last
session (the log ends where a session does, so no continuation is cut).
Deterministic in `seed` (and the other arguments, chunk_rows included).
"""

import math
import pathlib

import numpy as np

from mtl.data import scale
from mtl.errors import ConfigError, MtlError

RANK = 4
INTEREST_SCALE = 1.5
STAMINA_LOW, STAMINA_HIGH = 0.25, 0.55
ENGAGEMENT = 0.4
DURATION_MU, DURATION_SIGMA = math.log(30.0), 0.7
DURATION_MIN, DURATION_MAX = 3.0, 600.0
QUALITY_SD = 0.3
EXPLORE = 0.5
BIAS = -0.3
LENGTH_PENALTY = 0.3
KAPPA = 4.0
SESSION_GAP = 1800  # seconds: configs/video.py's session gap
IDLE = 2 * SESSION_GAP
COLUMNS = (
  'time',
  'user_id',
  'video_id',
  'category',
  'duration',
  'history',
  'watch_time',
  'session_id',
  'true_interest',
  'true_expected_watch_time',
  'true_continue_prob',
  'true_continues',
)
TRUTH = COLUMNS[7:]
SPLITS = scale.SPLITS


def world(seed: int, num_users: int, num_videos: int, num_categories: int):
  """The users' and videos' latent truth (module docstring) as a dict."""
  rng = np.random.default_rng(seed)
  p = rng.normal(size=(num_users, RANK))
  q = rng.normal(size=(num_categories, RANK))
  interest = INTEREST_SCALE * (p @ q.T) / math.sqrt(RANK)
  category = rng.permutation(np.arange(num_videos) % num_categories)
  duration = np.clip(
    np.round(np.exp(rng.normal(DURATION_MU, DURATION_SIGMA, num_videos)), 1),
    DURATION_MIN,
    DURATION_MAX,
  )
  z = interest - interest.max(1, keepdims=True)
  soft = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  feed = (1 - EXPLORE) * soft + EXPLORE / num_categories
  return {
    'interest': interest,
    'stamina': rng.uniform(STAMINA_LOW, STAMINA_HIGH, num_users),
    'category': category,
    'duration': duration,
    'quality': rng.normal(0.0, QUALITY_SD, num_videos),
    'feed_cdf': np.cumsum(feed, 1),
    'by_category': np.argsort(category, kind='stable'),
    'start': np.searchsorted(np.sort(category), np.arange(num_categories)),
    'count': np.bincount(category, minlength=num_categories),
  }


def expected_fraction(w: dict, users, videos) -> np.ndarray:
  """f: the expected watched fraction of each (user, video)."""
  z = (
    BIAS
    + w['interest'][users, w['category'][videos]]
    + w['quality'][videos]
    - LENGTH_PENALTY * (np.log(w['duration'][videos]) - DURATION_MU)
  )
  return 1 / (1 + np.exp(-z))


def _sessions(r, w: dict, n: int, clock: int, first_id: int):
  """The rows of n whole sessions in time order, and the clock after."""
  users = r.integers(0, len(w['stamina']), n)
  parts, active, pos = [], np.arange(n), 0
  while active.size:  # One impression of every session still going.
    u = users[active]
    cdf = w['feed_cdf'][u]
    draw = r.random(len(u))[:, None] * cdf[:, -1:]  # Inverse CDF.
    c = np.minimum((draw >= cdf).sum(1), cdf.shape[1] - 1)
    pick = np.floor(r.random(len(u)) * w['count'][c]).astype(np.int64)
    v = w['by_category'][w['start'][c] + pick]
    f = expected_fraction(w, u, v)
    frac = r.beta(KAPPA * f, KAPPA * (1 - f))
    prob = w['stamina'][u] + ENGAGEMENT * frac
    goes_on = r.random(len(u)) < prob
    parts.append((active, np.full(len(u), pos), u, v, f, frac, goes_on))
    active, pos = active[goes_on], pos + 1
  s, at, u, v, f, frac, goes_on = map(np.concatenate, zip(*parts, strict=True))
  order = np.lexsort((at, s))
  s, at, u, v, f, frac, goes_on = (
    x[order] for x in (s, at, u, v, f, frac, goes_on)
  )
  d = w['duration'][v]
  watch = d * frac
  idle = IDLE + np.ceil(r.exponential(SESSION_GAP, n)).astype(np.int64)
  step = np.where(
    at == 0, idle[s], np.ceil(np.r_[0.0, watch[:-1]]).astype(np.int64) + 1
  )
  time = clock + np.cumsum(step)
  rows = {
    'time': time,
    'user_id': u,
    'video_id': v,
    'category': w['category'][v],
    'duration': d,
    'watch_time': watch,
    'session_id': first_id + s,
    'true_interest': w['interest'][u, w['category'][v]],
    'true_expected_watch_time': d * f,
    'true_continue_prob': w['stamina'][u] + ENGAGEMENT * f,
    'true_continues': goes_on.astype(np.int8),
  }
  return rows, int(time[-1]), first_id + n


def _check(name: str, value, low: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ConfigError(f'video: {name} is {value!r}, expected an int >= {low}')


def write_video_table(
  folder,
  *,
  rows: int,
  eval_rows: int | None = None,
  num_users: int = 1000,
  num_videos: int = 2000,
  num_categories: int = 20,
  history_len: int = 10,
  chunk_rows: int = 1_000_000,
  seed: int = 0,
) -> dict[str, pathlib.Path]:
  """Writes the log (module docstring) as three Parquet files; returns
  {split: path}. Default eval_rows: rows // 10, at least 1,000.

  Raises:
    ConfigError: a count below 1 (categories: 2), or fewer videos than
      categories.
  """
  eval_rows = max(rows // 10, 1000) if eval_rows is None else eval_rows
  for name, value in (
    ('rows', rows),
    ('eval_rows', eval_rows),
    ('num_users', num_users),
    ('num_videos', num_videos),
    ('history_len', history_len),
    ('chunk_rows', chunk_rows),
  ):
    _check(name, value)
  _check('num_categories', num_categories, 2)
  _check('seed', seed, 0)
  if num_videos < num_categories:
    raise ConfigError(
      f'video: num_videos is {num_videos}, expected at least num_categories '
      f'({num_categories}): every category needs a video'
    )
  import pyarrow as pa
  import pyarrow.parquet as pq

  w = world(seed, num_users, num_videos, num_categories)
  recent = np.full((num_users, history_len), -1, np.int64)
  paths = {s: pathlib.Path(folder) / f'{s}.parquet' for s in SPLITS}
  pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
  total = rows + 2 * eval_rows
  bounds = (0, rows, rows + eval_rows, math.inf)
  pending, clock, next_id, writers = None, 0, 0, {}
  try:
    for c, begin in enumerate(range(0, total, chunk_rows)):
      n = min(chunk_rows, total - begin)
      r = np.random.default_rng([seed, c])
      parts = [pending] if pending else []
      have = len(pending['time']) if pending else 0
      while have < n:  # Sessions average about 3 rows.
        part, clock, next_id = _sessions(
          r, w, (n - have) // 2 + 8, clock, next_id
        )
        parts.append(part)
        have += len(part['time'])
      chunk = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
      s = chunk['session_id']
      if begin + n == total:  # The last row ends its session.
        n += int(np.sum(s[n:] == s[n - 1]))
      pending = {k: v[n:] for k, v in chunk.items()}
      chunk = {k: v[:n] for k, v in chunk.items()}
      hist = scale.histories(chunk['user_id'], chunk['video_id'], recent)
      chunk['history'] = scale.history_text(hist)
      table = pa.table({k: chunk[k] for k in COLUMNS})
      for k, split in enumerate(SPLITS):  # This chunk's rows of each split.
        lo = max(bounds[k] - begin, 0)
        hi = min(bounds[k + 1] - begin, n)
        if lo >= hi:
          continue
        if split not in writers:
          tmp = paths[split].with_name(paths[split].name + '.tmp')
          writers[split] = pq.ParquetWriter(tmp, table.schema)
        writers[split].write_table(table.slice(lo, int(hi) - lo))
  finally:
    for writer in writers.values():
      writer.close()
  for path in paths.values():  # Whole or not at all.
    path.with_name(path.name + '.tmp').replace(path)
  return paths


def main(argv=None) -> None:
  """`python -m mtl.data.video OUT --rows=N [--seed --users --videos ...]`."""
  import argparse
  import sys

  p = argparse.ArgumentParser(
    prog='mtl.data.video', description=__doc__.splitlines()[0]
  )
  p.add_argument('out', help='the folder of train/validation/test files')
  p.add_argument('--rows', type=int, default=200_000, help='train rows')
  p.add_argument('--eval_rows', type=int, default=None)
  p.add_argument('--users', type=int, default=1000)
  p.add_argument('--videos', type=int, default=2000)
  p.add_argument('--categories', type=int, default=20)
  p.add_argument('--history_len', type=int, default=10)
  p.add_argument('--chunk_rows', type=int, default=1_000_000)
  p.add_argument('--seed', type=int, default=0)
  a = p.parse_args(argv)
  try:
    write_video_table(
      a.out,
      rows=a.rows,
      eval_rows=a.eval_rows,
      num_users=a.users,
      num_videos=a.videos,
      num_categories=a.categories,
      history_len=a.history_len,
      chunk_rows=a.chunk_rows,
      seed=a.seed,
    )
  except MtlError as e:
    print(f'{p.prog}: error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
