"""A generated interaction log as large as asked, for data beyond memory.

`write_scale_table(folder, rows=...)` writes Parquet (or
CSV) train / validation / test files in chunks of `chunk_rows` rows: only
one chunk, the per-id effects and the users' recent items are ever in
memory (about `num_users * history_len * 8` bytes plus 16 bytes per id),
whatever `rows` is. The generic `table` dataset reads it by its schema
(configs/scale.py).

Columns of row i (an impression, in time order):

  ts          i: the row's time
  user_id     Zipf(zipf_exponent) over num_users ids: a few heavy users
  item_id     Zipf(zipf_exponent) over num_items ids: a long tail of items
  category    item_id's category, one of num_categories
  history     the user's last history_len items before this row, oldest
              first, '|'-separated (empty for a user's first row): the
              behaviour history, as a 'sequence' feature
  price       log-normal, > 0
  click       Bernoulli(sigmoid(a + user effect + item effect + price
              effect + a user-group x category interaction))
  conversion  given a click, Bernoulli(sigmoid(b + item effect + ...)); 0
              without a click
  watch_time  given a click, seconds, log-normal around the item's length;
              0 without a click

Ids are written as integers (rank 0 is the most frequent id). Deterministic
in `seed`: the effects come from default_rng(seed), chunk c's draws from
default_rng([seed, c]), so equal arguments write equal files.
"""

import pathlib

import numpy as np

from mtl.errors import ConfigError

COLUMNS = (
  'ts',
  'user_id',
  'item_id',
  'category',
  'history',
  'price',
  'click',
  'conversion',
  'watch_time',
)
FORMATS = ('parquet', 'csv')


def zipf_cdf(size: int, exponent: float) -> np.ndarray:
  """float64 [size]: the CDF of P(rank k) proportional to (k + 1)^-exponent."""
  w = np.arange(1, size + 1, dtype=np.float64) ** -exponent
  cdf = np.cumsum(w)
  return cdf / cdf[-1]


def draw(rng, cdf: np.ndarray, n: int) -> np.ndarray:
  """int64 [n] ranks by inverse-CDF sampling of `cdf`."""
  return np.minimum(np.searchsorted(cdf, rng.random(n)), len(cdf) - 1)


def histories(users, items, recent):
  """int64 [n, L] each row's user's last L items before it (-1: none), and
  updates `recent` [num_users, L] (oldest first) with this chunk's rows."""
  n, length = len(users), recent.shape[1]
  order = np.argsort(users, kind='stable')  # Each user's rows in time order.
  u, it = users[order], items[order]
  first = np.r_[True, u[1:] != u[:-1]]
  start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
  before = np.arange(n) - start  # Earlier rows of its user in this chunk.
  out = np.empty((n, length), np.int64)
  for j in range(1, length + 1):  # Column L - j: the j-th latest item.
    in_chunk = before >= j
    from_chunk = it[np.maximum(np.arange(n) - j, 0)]
    from_state = recent[u, np.clip(length - (j - before), 0, length - 1)]
    out[:, length - j] = np.where(in_chunk, from_chunk, from_state)
  last = np.r_[u[1:] != u[:-1], True]  # Each user's last row: new state.
  recent[u[last]] = np.concatenate([out[last, 1:], it[last, None]], 1)
  result = np.empty_like(out)
  result[order] = out
  return result


def history_text(hist: np.ndarray):
  """pyarrow string array: each row's ids joined by '|', -1s left out
  (they lead the row: an empty field, then trimmed with its separator)."""
  import pyarrow as pa
  import pyarrow.compute as pc

  cols = [pa.array(np.where(h < 0, '', h.astype(str))) for h in hist.T]
  return pc.utf8_ltrim(pc.binary_join_element_wise(*cols, '|'), characters='|')


SPLITS = ('train', 'validation', 'test')


def split_paths(folder) -> dict[str, pathlib.Path]:
  """{split: <folder>/<split>.parquet} (or .csv) the generator writes."""
  return {s: pathlib.Path(folder) / f'{s}.parquet' for s in SPLITS}


def write_scale_table(
  folder,
  *,
  rows: int,
  eval_rows: int | None = None,
  num_users: int = 1_000_000,
  num_items: int = 1_000_000,
  num_categories: int = 1000,
  zipf_exponent: float = 1.05,
  history_len: int = 10,
  chunk_rows: int = 1_000_000,
  file_format: str = 'parquet',
  seed: int = 0,
) -> dict[str, pathlib.Path]:
  """Writes the log (module docstring) as three files; returns their paths.

  The rows are one stream in time order: the first `rows` are
  <folder>/train.<fmt>, the next `eval_rows` validation, the next
  `eval_rows` test (a split by time; default eval_rows: rows // 100, at
  least 1,000). A split in files lets the `table` dataset read the large
  training file only twice (fit, encode) when it prepares it.

  Raises:
    ConfigError: a count below 1, or an unknown file_format.
  """
  eval_rows = max(rows // 100, 1000) if eval_rows is None else eval_rows
  for key, value in (
    ('rows', rows),
    ('eval_rows', eval_rows),
    ('num_users', num_users),
    ('num_items', num_items),
    ('num_categories', num_categories),
    ('history_len', history_len),
    ('chunk_rows', chunk_rows),
  ):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f'scale: {key} is {value!r}, expected an int >= 1')
  if file_format not in FORMATS:
    raise ConfigError(
      f'scale: file_format is {file_format!r}, expected one of '
      f'{", ".join(FORMATS)}'
    )
  import pyarrow as pa
  import pyarrow.csv as pacsv
  import pyarrow.parquet as pq

  rng = np.random.default_rng(seed)
  user_cdf = zipf_cdf(num_users, zipf_exponent)
  item_cdf = zipf_cdf(num_items, zipf_exponent)
  user_effect = rng.normal(0.0, 0.5, num_users).astype(np.float32)
  item_effect = rng.normal(0.0, 0.5, num_items).astype(np.float32)
  item_length = rng.normal(4.0, 0.5, num_items).astype(np.float32)
  category_of = rng.integers(0, num_categories, num_items)
  taste = rng.normal(0.0, 0.8, (16, num_categories)).astype(np.float32)
  recent = np.full((num_users, history_len), -1, np.int64)
  paths = {
    s: p.with_suffix(f'.{file_format}') for s, p in split_paths(folder).items()
  }
  pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
  bounds = np.cumsum([0, rows, eval_rows, eval_rows])
  writers = {}
  try:
    for c, begin in enumerate(range(0, int(bounds[-1]), chunk_rows)):
      n = min(chunk_rows, int(bounds[-1]) - begin)
      r = np.random.default_rng([seed, c])
      users, items = draw(r, user_cdf, n), draw(r, item_cdf, n)
      hist = histories(users, items, recent)
      category = category_of[items]
      price = np.exp(r.normal(3.0, 1.0, n))
      z = (
        -2.0
        + user_effect[users]
        + item_effect[items]
        + taste[users % 16, category]
        - 0.3 * (np.log(price) - 3.0)
      )
      click = r.random(n) < 1 / (1 + np.exp(-z))
      zc = -1.5 + 0.8 * item_effect[items] + 0.5 * user_effect[users]
      conversion = click & (r.random(n) < 1 / (1 + np.exp(-zc)))
      watch = np.exp(item_length[items] + r.normal(0.0, 0.8, n))
      table = pa.table(
        {
          'ts': np.arange(begin, begin + n, dtype=np.int64),
          'user_id': users,
          'item_id': items,
          'category': category,
          'history': history_text(hist),
          'price': np.round(price, 2),
          'click': click.astype(np.int8),
          'conversion': conversion.astype(np.int8),
          'watch_time': np.where(click, np.round(watch, 1), 0.0),
        }
      )
      for k, split in enumerate(SPLITS):  # This chunk's rows of each split.
        lo = max(int(bounds[k]) - begin, 0)
        hi = min(int(bounds[k + 1]) - begin, n)
        if lo >= hi:
          continue
        if split not in writers:
          tmp = paths[split].with_name(paths[split].name + '.tmp')
          writers[split] = (
            pq.ParquetWriter(tmp, table.schema)
            if file_format == 'parquet'
            else pacsv.CSVWriter(tmp, table.schema)
          )
        writers[split].write_table(table.slice(lo, hi - lo))
  finally:
    for w in writers.values():
      w.close()
  for path in paths.values():  # Whole or not at all.
    path.with_name(path.name + '.tmp').replace(path)
  return paths


def main(argv=None) -> None:
  """`python -m mtl.data.scale OUT --rows=N [--seed --users --items]`."""
  import argparse

  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('out', help='the folder of train/validation/test files')
  p.add_argument('--rows', type=int, default=1_000_000, help='train rows')
  p.add_argument('--eval_rows', type=int, default=None)
  p.add_argument('--format', default='parquet', choices=FORMATS)
  p.add_argument('--users', type=int, default=1_000_000)
  p.add_argument('--items', type=int, default=1_000_000)
  p.add_argument('--history_len', type=int, default=10)
  p.add_argument('--chunk_rows', type=int, default=1_000_000)
  p.add_argument('--seed', type=int, default=0)
  a = p.parse_args(argv)
  write_scale_table(
    a.out,
    rows=a.rows,
    eval_rows=a.eval_rows,
    num_users=a.users,
    num_items=a.items,
    history_len=a.history_len,
    chunk_rows=a.chunk_rows,
    file_format=a.format,
    seed=a.seed,
  )


if __name__ == '__main__':
  main()
