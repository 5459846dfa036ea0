"""A generated multi-scenario log: two tasks whose relation differs by scenario.

Impressions in S scenarios (feed tabs), each with a click and a like whose
true probabilities are columns, so a model's AUC can be set against the
oracle's (`oracle_aucs`). It makes measurable what two lines of work claim:
personalised priors (a user's activity, an item's popularity) change how
the same interests turn into outcomes, differently per scenario (PEPNet:
Chang et al., "PEPNet: Parameter and Embedding Personalized Network for
Infusing with Personalized Prior Information", KDD 2023), and tasks that
conflict in some scenarios transfer negatively through shared parameters
(STEM: Su et al., "STEM: Unleashing the Power of Embeddings for Multi-task
Recommendation", AAAI 2024).

The world, from default_rng(seed) (R = RANK = 4, k in {click, like}):

  p_u, q_c ~ N(0, I_R), whitened (over users, categories: mean 0, second
             moment I exactly)                 user u, category c
  a[u, c]  = <p_u, q_c> / sqrt(R)              the shared interest      (1)
  A_s, B_s   R x R, unit Frobenius norm, orthogonal to I and each other
  b1[s, u, c] = p_u' A_s q_c,  e[s, u, c] = p_u' B_s q_c                (2)
  b2 = rho_s b1 + sqrt(1 - rho_s^2) e,  rho_s = |rho| for even s
       (agreement), rho for odd s (conflict)                            (3)
  level[u] ~ (0.5, 0.3, 0.2) over (low, mid, high); x[i] ~ N(0, 1) the
  item's popularity; category[i] balanced over the categories

so over the (u, c) grid a, b1, e have mean 0, variance 1 and no
correlation, exactly, and corr(b1, b2) = rho_s. An impression (chunk j's
draws from default_rng([seed, j])): scenario s with probability
proportional to 0.7^s, user u to (1, 3, 9)[level[u]], item i to
exp(x[i]) (exposure follows popularity), c = category[i], and

  gain[l, s] = 1 + 0.5 (l - 1) sign_s,  sign_s = +1 (even s), -1 (odd)  (4)
  logit_k = bias[k, s] + gain[level[u], s] (0.6 a + 1.0 b_k)
            + pop[k, s] x[i],                                           (5)
  bias = (-1 - 0.25 s, -1.5 + 0.25 s),  pop = (0.4, 0.4 sign_s)
  P_k = sigmoid(logit_k);  click, like ~ Bernoulli(P_k), independent

In even scenarios active users follow their interests more sharply (gains
0.5, 1, 1.5 for low, mid, high) and popular items get more of both
outcomes; in odd ones the gains reverse and popularity lowers likes. Over a
scenario's rows (a and b independent of the gain g and of x):

  corr(logit_click, logit_like) = (E[g^2] (0.36 + rho_s)
      + pop_click pop_like Var(x)) / (sd_click sd_like),                (6)
  sd_k^2 = E[g^2] 1.36 + pop_k^2 Var(x),

with E[g^2] = 1.59 (even s) and 0.77 (odd s) over the rows' activity
levels and Var(x) about 0.85 under popular exposure: positive in agreement
scenarios, negative in conflict ones for rho below about -0.17 (at the
default -0.8: +0.86 and -0.42).

Columns of each row, in time order (`time` strictly increasing):

  time, scenario, user_id, item_id, category, user_activity (low, mid,
  high), item_popularity (x)                     the inputs
  click, like                                    the labels
  true_click, true_like (P_k)                    the truth: never inputs

One gzip TSV, <folder>/log.tsv.gz, read by configs/scenarios.py with the
`table` dataset's split by time: the last round(0.1 n) rows test, the
round(0.1 n) before them validation (`split_rows`). Deterministic in
`seed` and the other arguments (chunk_rows included): equal arguments write
equal bytes.
"""

import gzip
import io
import math
import pathlib

import numpy as np
import pandas as pd

from mtl.core import ranking_metrics as rm
from mtl.errors import ConfigError, MtlError

RANK = 4
SHARED, SPECIFIC = 0.6, 1.0
ACTIVITY = ('low', 'mid', 'high')
ACTIVITY_SHARE = (0.5, 0.3, 0.2)
ACTIVITY_RATE = (1.0, 3.0, 9.0)
GAIN_SLOPE = 0.5
POP_SIGMA = 1.0
POP_EFFECT = 0.4
CLICK_BIAS, LIKE_BIAS, SCENARIO_SHIFT = -1.0, -1.5, 0.25
SCENARIO_DECAY = 0.7
MAX_GAP = 30  # seconds between impressions: 1 .. MAX_GAP
TASKS = ('click', 'like')
COLUMNS = tuple(
  'time scenario user_id item_id category user_activity item_popularity '
  'click like true_click true_like'.split()
)
LOG_FILE = 'log.tsv.gz'


def _unit_orthogonal(r, basis: list) -> np.ndarray:
  """A random R x R matrix orthogonal (Frobenius) to `basis`, norm 1."""
  m = r.normal(size=(RANK, RANK))
  for b in basis:
    m = m - np.sum(m * b) / np.sum(b * b) * b
  return m / np.linalg.norm(m)


def scenario_rho(rho: float, num_scenarios: int) -> np.ndarray:
  """rho_s: |rho| in even (agreement) scenarios, rho in odd (conflict)."""
  s = np.arange(num_scenarios)
  return np.where(s % 2 == 0, abs(rho), rho)


def _whiten(x: np.ndarray) -> np.ndarray:
  """x centred with its rows' second moment made I (rows > RANK)."""
  x = x - x.mean(0)
  chol = np.linalg.cholesky(x.T @ x / len(x))
  return np.linalg.solve(chol, x.T).T


def world(
  seed: int,
  num_users: int,
  num_items: int,
  num_categories: int,
  num_scenarios: int,
  rho: float,
) -> dict:
  """The latent truth of equations (1)-(5) as a dict of arrays."""
  rng = np.random.default_rng(seed)
  p = _whiten(rng.normal(size=(num_users, RANK)))
  q = _whiten(rng.normal(size=(num_categories, RANK)))
  eye = np.eye(RANK)
  specific, noise = [], []
  for _ in range(num_scenarios):
    specific.append(_unit_orthogonal(rng, [eye]))
    noise.append(_unit_orthogonal(rng, [eye, specific[-1]]))
  b1 = np.einsum('ur,srt,ct->suc', p, np.array(specific), q)
  e = np.einsum('ur,srt,ct->suc', p, np.array(noise), q)
  rs = scenario_rho(rho, num_scenarios)[:, None, None]
  level = rng.choice(len(ACTIVITY), size=num_users, p=ACTIVITY_SHARE)
  x = rng.normal(size=num_items)
  category = rng.permutation(np.arange(num_items) % num_categories)
  s = np.arange(num_scenarios)
  sign = np.where(s % 2 == 0, 1.0, -1.0)
  user_w = np.asarray(ACTIVITY_RATE)[level]
  item_w = np.exp(POP_SIGMA * x)
  scen_w = SCENARIO_DECAY**s
  return {
    'shared': p @ q.T / math.sqrt(RANK),
    'specific': np.stack([b1, rs * b1 + np.sqrt(1 - rs**2) * e]),
    'level': level,
    'popularity': x,
    'category': category,
    'gain': 1 + GAIN_SLOPE * (np.arange(3)[:, None] - 1) * sign,
    'bias': np.stack(
      [CLICK_BIAS - SCENARIO_SHIFT * s, LIKE_BIAS + SCENARIO_SHIFT * s]
    ),
    'pop': np.stack([np.full(num_scenarios, POP_EFFECT), POP_EFFECT * sign]),
    'cdf': [np.cumsum(w / w.sum()) for w in (scen_w, user_w, item_w)],
  }


def probabilities(w: dict, s, u, i) -> np.ndarray:
  """P_k of equation (5) for rows (scenario, user, item): [2, n]."""
  c = w['category'][i]
  g = w['gain'][w['level'][u], s]
  inner = SHARED * w['shared'][u, c] + SPECIFIC * w['specific'][:, s, u, c]
  z = w['bias'][:, s] + g * inner + w['pop'][:, s] * w['popularity'][i]
  return 1 / (1 + np.exp(-z))


def _draw(cdf: np.ndarray, r, n: int) -> np.ndarray:
  return np.minimum(np.searchsorted(cdf, r.random(n), 'right'), len(cdf) - 1)


def _chunk(r, w: dict, n: int, clock: int) -> tuple[str, int]:
  """n impressions as TSV lines, and the clock after them."""
  s, u, i = (_draw(cdf, r, n) for cdf in w['cdf'])
  time = clock + np.cumsum(r.integers(1, MAX_GAP + 1, n))
  prob = probabilities(w, s, u, i)
  labels = (r.random((2, n)) < prob).astype(np.int64)
  activity = np.asarray(ACTIVITY)[w['level'][u]]
  popularity = np.round(w['popularity'][i], 6)
  values = (time, s, u, i, w['category'][i], activity, popularity)
  values += (*labels, *np.round(prob, 10))
  frame = pd.DataFrame(dict(zip(COLUMNS, values, strict=True)))
  text = frame.to_csv(sep='\t', header=False, index=False, lineterminator='\n')
  return text, int(time[-1])


def _check(name: str, value, low: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ConfigError(
      f'scenarios: {name} is {value!r}, expected an int >= {low}'
    )


def write_scenarios_table(
  folder,
  *,
  rows: int,
  num_users: int = 1000,
  num_items: int = 2000,
  num_categories: int = 20,
  num_scenarios: int = 3,
  rho: float = -0.8,
  chunk_rows: int = 1_000_000,
  seed: int = 0,
) -> pathlib.Path:
  """Writes the log (module docstring) as <folder>/log.tsv.gz with a header
  line; returns its path.

  Raises:
    ConfigError: a count below 1 (users and categories: RANK + 1,
      scenarios: 2, seed: 0), fewer items than categories, or rho outside
      [-1, 1].
  """
  _check('rows', rows)
  _check('num_items', num_items)
  _check('chunk_rows', chunk_rows)
  _check('num_users', num_users, RANK + 1)  # Whitened: more than RANK.
  _check('num_categories', num_categories, RANK + 1)
  _check('num_scenarios', num_scenarios, 2)
  _check('seed', seed, 0)
  if num_items < num_categories:
    raise ConfigError(
      f'scenarios: num_items is {num_items}, expected at least '
      f'num_categories ({num_categories}): every category needs an item'
    )
  ok = isinstance(rho, (int, float)) and not isinstance(rho, bool)
  if not ok or not -1 <= rho <= 1:
    raise ConfigError(
      f'scenarios: rho is {rho!r}, expected a number in [-1, 1] (the '
      'correlation of the tasks in the conflict scenarios)'
    )
  w = world(seed, num_users, num_items, num_categories, num_scenarios, rho)
  path = pathlib.Path(folder) / LOG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  clock = 0  # gzip header: mtime 0, no name; equal arguments, equal bytes.
  with open(tmp, 'wb') as raw:
    with gzip.GzipFile('', 'wb', 1, raw, mtime=0) as gz:
      text = io.TextIOWrapper(gz, encoding='utf-8', newline='')
      text.write('\t'.join(COLUMNS) + '\n')
      for j, begin in enumerate(range(0, rows, chunk_rows)):
        r = np.random.default_rng([seed, j])
        lines, clock = _chunk(r, w, min(chunk_rows, rows - begin), clock)
        text.write(lines)
      text.flush()
      text.detach()
  tmp.replace(path)  # Whole or not at all.
  return path


def split_rows(n: int, validation_fraction=0.1, test_fraction=0.1):
  """(validation, test) row slices of the `table` dataset's time split of n
  rows in time order (mtl/data/table_splits.py: round(fraction * n))."""
  n_val, n_test = round(validation_fraction * n), round(test_fraction * n)
  return slice(n - n_test - n_val, n - n_test), slice(n - n_test, n)


def oracle_aucs(columns, rows=slice(None)) -> dict:
  """The best reachable AUC: each task's AUC of its truth probability on
  `rows` (default all; the test rows: split_rows(n)[1]), overall and per
  scenario. columns: a mapping (a DataFrame) of the log's columns.
  Returns {task: {'all': auc, <scenario>: auc, ...}}."""
  s = np.asarray(columns['scenario'])[rows]
  out = {}
  for task in TASKS:
    y = np.asarray(columns[task])[rows]
    p = np.asarray(columns[f'true_{task}'])[rows]
    out[task] = {'all': rm.auc(y, p)}
    for v in np.unique(s):
      out[task][int(v)] = rm.auc(y[s == v], p[s == v])
  return out


def main(argv=None) -> None:
  """`python -m mtl.data.scenarios OUT --rows=N [--num_users ... --rho
  --seed]`: write_scenarios_table's keywords as flags, with its defaults."""
  import argparse
  import sys

  p = argparse.ArgumentParser(
    prog='mtl.data.scenarios', description=__doc__.splitlines()[0]
  )
  p.add_argument('out', help='the folder of log.tsv.gz')
  p.add_argument('--rows', type=int, default=500_000, help='all rows')
  keywords = write_scenarios_table.__kwdefaults__
  for key, default in keywords.items():
    p.add_argument(f'--{key}', type=type(default), default=default)
  a = p.parse_args(argv)
  try:
    write_scenarios_table(
      a.out, rows=a.rows, **{k: getattr(a, k) for k in keywords}
    )
  except MtlError as e:
    print(f'{p.prog}: error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
