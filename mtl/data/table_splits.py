"""Which split each row of a table is in (the `split` of table_spec.py).

Rules: 'files' (train / validation / test given as files; `holdout` moves
a stratified fraction of the training file to validation), 'random' (a
numpy default_rng(seed) permutation: the first round(validation_fraction *
N) rows validation, the next round(test_fraction * N) test, as
movielens.py), 'time' (rows ordered by time, ties by row: the last
test_fraction test, the validation_fraction before them validation),
'user_last' (each user's last `last_n` rows by time test, the `last_n`
before them validation). A row's code is its index in SPLITS.
"""

import numpy as np
import pandas as pd

SPLITS = ('train', 'validation', 'test')
SPLIT_RULES = ('files', 'random', 'time', 'user_last')


def split_codes(split: dict, held: dict, files, sizes) -> np.ndarray:
  """int8 [sum(sizes)]: each row's split code under the rule `split`.

  Args:
    split: the split's keys ('rule', and the rule's own).
    held: the columns the rule reads, by name, over every row.
    files: each file's split code (rule 'files'; else one None).
    sizes: each file's rows.
  """
  n, rule = int(sum(sizes)), split['rule']
  if rule == 'files':
    codes = np.repeat(np.array(list(files), np.int8), sizes)
    if split.get('holdout'):
      train = np.flatnonzero(codes == 0)
      by = [held[c][train] for c in split['holdout']['stratify']]
      codes[train[holdout(by, len(train), **split['holdout'])]] = 1
    return codes
  codes = np.zeros(n, np.int8)
  if rule == 'user_last':
    users = pd.factorize(held[split['user_column']])[0]
    order = np.lexsort((np.arange(n), held[split['time_column']], users))
    ordered = users[order]
    last = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    # Rows after each position within its user: the user's last row 0.
    end = np.repeat(last, np.diff(np.r_[-1, last]))
    after = end - np.arange(n)
    k = split['last_n']
    codes[order[after < k]] = 2
    codes[order[(after >= k) & (after < 2 * k)]] = 1
    return codes
  if rule == 'random':
    order = np.random.default_rng(split['seed']).permutation(n)
    n_val = round(split['validation_fraction'] * n)
    n_test = round(split['test_fraction'] * n)
    codes[order[:n_val]] = 1
    codes[order[n_val : n_val + n_test]] = 2
    return codes
  order = np.lexsort((np.arange(n), held[split['time_column']]))
  n_val = round(split['validation_fraction'] * n)
  n_test = round(split['test_fraction'] * n)
  codes[order[n - n_test :]] = 2
  codes[order[n - n_test - n_val : n - n_test]] = 1
  return codes


def holdout(by, n: int, *, fraction: float, seed: int, stratify) -> np.ndarray:
  """bool [n]: the rows held out, `fraction` of each group of equal `by`
  values (groups in sorted order; one group if `by` is empty).

  Each group of m rows gives round(fraction * m) rows, but at least one and
  at most m - 1 when m >= 2 (so a rare label has rows on both sides), drawn
  by one numpy default_rng(seed), group after group.
  """
  del stratify  # The columns; `by` holds their values.
  keys = np.zeros(n, np.int64)
  if by:  # '\x1f' sorts before any text: the tuples' order.
    joined = np.asarray(by[0], str)
    for values in by[1:]:
      joined = np.char.add(np.char.add(joined, '\x1f'), np.asarray(values, str))
    keys = np.unique(joined, return_inverse=True)[1]
  rng = np.random.default_rng(seed)
  chosen = np.zeros(n, bool)
  for group in range(int(keys.max(initial=-1)) + 1):
    rows = np.flatnonzero(keys.reshape(-1) == group)
    k = round(fraction * len(rows))
    if len(rows) >= 2:
      k = min(max(k, 1), len(rows) - 1)
    chosen[rng.choice(rows, size=k, replace=False)] = True
  return chosen
