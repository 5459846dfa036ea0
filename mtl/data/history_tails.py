"""A history feature's end of the log, and given rows that continue it.

Schema kind 'history' (schema.py; table_plan.Plan derives it when the
data is prepared): a row's history is the `item`s of the same `user`'s rows
with a strictly earlier `time`, the latest `max_len`, oldest first; every
split's rows count. For prediction, the builder stores each user's last
`max_len` items over the whole log (`tails`, with the fitted encoding), and
rows given to mtl-predict, mtl-eval on a file or a served model that lack
the history column get it derived (`continued`): the user's log tail, then
the given rows of that user (the whole file, not only a chunk) with a
strictly earlier time, in (time, row) order, the latest `max_len`. Given
rows are taken to follow the whole log, as the log's rows follow each
other. A given row whose user is empty gets an empty history.

Vectorised: index arithmetic over the rows sorted by (user, time, row), as
in table_plan.py; no loop over rows.
"""

import numpy as np
import pandas as pd

from mtl.data import schema as sc
from mtl.data.encoding import PAD_ID


def tails(users, items, max_len: int) -> dict:
  """{'users', 'lengths', 'items'} (JSON): each user's last `max_len` items,
  oldest first, flat; `users` and `items` (text [N]) are the log's rows in
  (user, time, row) order."""
  users = np.asarray(users, object)
  u = pd.factorize(pd.Series(users, dtype=object))[0]
  n = len(u)
  last = np.flatnonzero(np.r_[u[1:] != u[:-1], True]) if n else u
  end = np.repeat(last, np.diff(np.r_[-1, last]))  # each row's user's last
  keep = end - np.arange(n) < max_len
  return {
    'users': [str(x) for x in users[np.r_[0, last[:-1] + 1][: len(last)]]],
    'lengths': np.bincount(u[keep], minlength=len(last)).tolist(),
    'items': [str(x) for x in np.asarray(items, object)[keep]],
  }


def continued(h: sc.History, fitted: dict, lookup, users, time, items):
  """int32 [n, max_len]: the histories of given rows after the log (module
  docstring), item ids by `lookup` (the item table's), padded with PAD_ID.

  Args:
    fitted: `tails` of the log; users, items: object [n] text (a user None:
      missing); time: float64 [n].
  """
  L = h.max_len
  users = pd.Series(np.asarray(users, object), dtype=object)
  n = len(users)
  lengths = np.asarray(fitted['lengths'], np.int64)
  starts = np.cumsum(lengths) - lengths
  tail_ids = lookup(np.asarray(fitted['items'], object))
  at = pd.Index(fitted['users'], dtype=object).get_indexer(users)
  codes = pd.factorize(users)[0]
  order = np.lexsort((np.arange(n), np.asarray(time, np.float64), codes))
  c, t = codes[order], np.asarray(time, np.float64)[order]
  new_user = np.r_[True, c[1:] != c[:-1]]
  new_run = new_user | np.r_[True, t[1:] != t[:-1]]
  user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
  run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
  present = c >= 0
  given = np.where(present, np.minimum(run_start - user_start, L), 0)
  a = at[order]
  tail_len = np.where(present & (a >= 0), lengths[np.maximum(a, 0)], 0)
  tail = np.minimum(tail_len, L - given)
  tail_end = starts[np.maximum(a, 0)] + tail_len
  given_ids = lookup(np.asarray(items, object)[order])
  j = np.arange(L)[None, :]
  from_tail = j < tail[:, None]
  from_given = ~from_tail & (j < (tail + given)[:, None])
  tail_at = tail_end[:, None] - tail[:, None] + j
  given_at = run_start[:, None] - given[:, None] + j - tail[:, None]
  out = np.full((n, L), PAD_ID, np.int32)
  if len(tail_ids):
    picked = tail_ids[np.clip(tail_at, 0, len(tail_ids) - 1)]
    out = np.where(from_tail, picked, out)
  if n:
    picked = given_ids[np.clip(given_at, 0, n - 1)]
    out = np.where(from_given, picked, out)
  result = np.empty_like(out)
  result[order] = out
  return result
