"""Ranking metrics of stored predictions (numpy, host side, vectorised).

Every function takes flat arrays of one task's rows: `y` the labels, `p` the
predictions (any monotone score: probability, logit or a fused score) and,
for the per-user metrics, `users` any integer or string key. Nothing loops
over users in Python: rows are sorted by (user, ...) once and per-user sums
come from `np.add.reduceat` / `np.bincount`, so 1e6 rows take well under a
second (XAUC: about a second, its inversion count is O(n log^2 n)).

- `mae`, `rmse`: of a regression's predictions.
- `auc`: the pooled ROC AUC, ties counting one half.
- `gauc`: the per-user AUC averaged with weights the users' impressions
  (rows), over users with both classes only (Zhou et al., "Deep Interest
  Network for Click-Through Rate Prediction", KDD 2018, eq. 8).
- `xauc`: the share of same-user pairs with different watch times that the
  prediction orders like the watch time, a tie in the prediction counting
  one half (Zhan et al., "Deconfounding Duration Bias in Watch-time
  Prediction for Video Recommendation", KDD 2022, section 5.1). Pairs are
  pooled over users. Exact: concordant pairs are all pairs minus the
  inversions of the prediction within each user's rows sorted by watch
  time (a bottom-up merge count over all users at once) minus the ties.
- `ndcg`: NDCG@k per user, averaged over users with a positive ideal DCG
  (Jarvelin & Kekalainen, "Cumulated gain-based evaluation of IR
  techniques", TOIS 2002), gains y or 2^y - 1; tied predictions share their
  positions' discounts equally (McSherry & Najork, ECIR 2008), the
  expectation over random tie breaking, as scikit-learn's `ndcg_score`.
"""

import numpy as np


def mae(y, p) -> float:
  return float(np.mean(np.abs(np.asarray(p, float) - np.asarray(y, float))))


def rmse(y, p) -> float:
  d = np.asarray(p, float) - np.asarray(y, float)
  return float(np.sqrt(np.mean(d * d)))


def _dense_rank(x) -> np.ndarray:
  """0-based ranks, equal values sharing one: int64 [n]."""
  _, inv = np.unique(np.asarray(x), return_inverse=True)
  return inv.reshape(-1).astype(np.int64)


def _pairs(*keys) -> int:
  """Number of row pairs equal on every key: sum over groups of C(m, 2)."""
  n = len(keys[0])
  if n == 0:
    return 0
  key = keys[0]
  for k in keys[1:]:  # Dense ranks < n: key * n + k stays exact in int64.
    key = _dense_rank(key) * n + k
  _, counts = np.unique(key, return_counts=True)
  return int(np.sum(counts * (counts - 1) // 2))


def _midranks(keys: np.ndarray) -> np.ndarray:
  """1-based ranks of `keys` (sorted ascending), ties at their mean rank."""
  n = len(keys)
  start = np.r_[True, keys[1:] != keys[:-1]]
  first = np.flatnonzero(start)
  last = np.r_[first[1:], n] - 1
  group = np.cumsum(start) - 1
  return (first[group] + last[group]) / 2.0 + 1.0


def auc(y, p) -> float:
  """Pooled ROC AUC of binary `y` by score `p` (NaN with one class)."""
  y = np.asarray(y) > 0.5
  p = np.asarray(p, float)
  order = np.argsort(p, kind='stable')
  ranks = _midranks(p[order])
  pos = y[order]
  n_pos, n_neg = pos.sum(), (~pos).sum()
  if not n_pos or not n_neg:
    return float('nan')
  return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_user_auc(y, p, users):
  """(AUC [U], impressions [U], has both classes [U]) per distinct user."""
  u = _dense_rank(users)
  y = np.asarray(y) > 0.5
  p = np.asarray(p, float)
  order = np.lexsort((p, u))
  u, y, p = u[order], y[order], p[order]
  # Midranks within each user: ranks of (user, p) keys minus the user's start.
  key = u * (len(p) + 1) + _dense_rank(p)
  ranks = _midranks(key)
  n_users = int(u.max()) + 1 if len(u) else 0
  rows = np.bincount(u, minlength=n_users)
  start = np.r_[0, np.cumsum(rows)[:-1]]
  ranks = ranks - start[u]
  n_pos = np.bincount(u, weights=y, minlength=n_users)
  n_neg = rows - n_pos
  rank_sum = np.bincount(u, weights=np.where(y, ranks, 0.0), minlength=n_users)
  both = (n_pos > 0) & (n_neg > 0)
  denom = np.where(both, n_pos * n_neg, 1.0)
  value = (rank_sum - n_pos * (n_pos + 1) / 2) / denom
  return np.where(both, value, np.nan), rows, both


def gauc(y, p, users) -> float:
  """Impression-weighted mean of per-user AUCs (users with both classes)."""
  value, rows, both = per_user_auc(y, p, users)
  if not both.any():
    return float('nan')
  return float(np.sum(value[both] * rows[both]) / np.sum(rows[both]))


def _inversions(seq: np.ndarray) -> int:
  """Pairs i < j with seq[i] > seq[j] (strict), by bottom-up merging.

  seq holds ranks in [0, n). At width w, each right half of a 2w block
  counts, per element, the left half's elements above it (one searchsorted
  of all blocks at once: values offset by block * n keep blocks apart);
  then each 2w block is sorted for the next level.
  """
  n = len(seq)
  s = np.asarray(seq, np.int64).copy()
  pos = np.arange(n)
  total, w = 0, 1
  while w < n:
    block = pos // (2 * w)
    right = (pos // w) % 2 == 1
    key = block * n + s
    left_keys = key[~right]  # Sorted: blocks ascend, each half sorted.
    left_end = np.searchsorted(left_keys, (block[right] + 1) * n)
    above = left_end - np.searchsorted(left_keys, key[right], side='right')
    total += int(above.sum())
    s = np.sort(key, kind='stable') - block * n
    w *= 2
  return total


def xauc(y, p, users) -> float:
  """Share of same-user pairs with y_i != y_j ordered like y by p.

  Ties in p count one half; pairs with equal y are not counted. NaN when
  no user has two rows of different y.
  """
  u = _dense_rank(users)
  ry, rp = _dense_rank(y), _dense_rank(p)
  same_user = _pairs(u)
  pairs = same_user - _pairs(u, ry)  # Same user, different y.
  if pairs == 0:
    return float('nan')
  tied_p = _pairs(u, rp) - _pairs(u, ry, rp)  # Tied p, different y.
  # Sorted by (user, y, p): an inversion of (user, p) is a same-user pair
  # ordered by y (strictly: equal y are sorted by p) against p.
  order = np.lexsort((rp, ry, u))
  key = _dense_rank(u[order] * (len(rp) + 1) + rp[order])
  discordant = _inversions(key)
  concordant = pairs - discordant - tied_p
  return float((concordant + 0.5 * tied_p) / pairs)


def ndcg(y, p, users, k: int = 10, *, exponential: bool = False) -> float:
  """Mean over users of NDCG@k (gain y, or 2^y - 1 when `exponential`)."""
  u = _dense_rank(users)
  y = np.asarray(y, float)
  p = np.asarray(p, float)
  gain = np.exp2(y) - 1 if exponential else y
  n_users = int(u.max()) + 1 if len(u) else 0
  if not n_users:
    return float('nan')
  rows = np.bincount(u, minlength=n_users)
  start = np.r_[0, np.cumsum(rows)[:-1]]

  def dcg(order, ties):
    g = gain[order]
    if ties is not None:  # Tied scores share their gains equally.
      t = ties[order]
      grp = np.cumsum(np.r_[True, (t[1:] != t[:-1])]) - 1
      g = (np.bincount(grp, weights=g) / np.bincount(grp))[grp]
    rank = np.arange(len(order)) - start[u[order]]
    disc = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    return np.bincount(u[order], weights=g * disc, minlength=n_users)

  pr = _dense_rank(p)
  key = u * (len(p) + 1) + (len(p) - pr)  # User, then p descending.
  got = dcg(np.argsort(key, kind='stable'), key)
  ideal = dcg(np.lexsort((-gain, u)), None)
  ok = ideal > 0
  if not ok.any():
    return float('nan')
  return float(np.mean(got[ok] / ideal[ok]))
