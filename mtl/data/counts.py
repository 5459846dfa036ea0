"""Leak-free count features: a key's past activity and past positive rates.

Schema kind 'count' (schema.py). For each row, over the rows with the same
`key` value whose `time` is strictly below its own (a row of the same time
is not earlier, nor is the row itself, as for history):

  n        how many such rows there are; the model reads log1p(n);
  rate_l   for each of `labels` (a 0/1 column, or a condition such as
           'rating >= 4'), (sum_l + a * p_l) / (n + a): their positives
           smoothed toward p_l, the label's rate over the training split,
           with a = prior_strength pseudo-rows.

This is target statistics computed in an order, as CatBoost's ordered
target statistics (Prokhorenkova et al., 2018, "CatBoost: unbiased
boosting with categorical features", NeurIPS), with time as the order, and
smoothed toward the prior as in Micci-Barreca (2001, "A preprocessing
scheme for high-cardinality categorical attributes in classification and
prediction problems", SIGKDD Explorations): a row's own labels, and those
of rows at its time or later, never enter its features.

Which rows count: the whole log, every split's rows (as a history's items),
since at serving time every earlier interaction's outcome is known. A test
row of a random split thus counts the earlier training rows, and a training
row the earlier test rows; a time split's test rows count only the past.
The priors and the standardisation moments are fitted on training rows.

A row with a missing key gets n = 0 and every rate its prior. The model's
inputs '<name>.count' and '<name>.<label>' are standardised with the
training rows' moments, as a 'standard' dense feature.

Vectorised: the rows are sorted by (key, time, row) and each row's counts
are cumulative sums up to the first row of its (key, time) group minus
those up to its key's first row; no loop over rows.

At prediction (preprocessing.Encoder) the given rows continue the log: the
log's per-key totals (stored with the encoding) plus the given rows with a
strictly earlier time. Given rows without the label columns count in n but
not in the rates, whose denominator is then the labelled rows' count.
"""

import numpy as np
import pandas as pd

from mtl.data import schema as sc
from mtl.data.conditions import label_column, parse_condition
from mtl.data.table_files import found, to_float
from mtl.errors import DataError, did_you_mean


def outputs(f: sc.Count) -> list[str]:
  """The feature's dense input names: '<name>.count', '<name>.<label>'."""
  return [f'{f.name}.count'] + [f'{f.name}.{t}' for t in f.labels]


def label_columns(f: sc.Count) -> list[str]:
  return [label_column(t) for t in f.labels]


def columns(f: sc.Count) -> list[str]:
  """The file columns the feature reads."""
  return list(dict.fromkeys([f.key, f.time] + label_columns(f)))


def check_columns(f: sc.Count, found, path) -> None:
  """One DataError naming the feature's key whose column the file lacks."""
  found = list(found)
  keys = [('key', f.key), ('time', f.time)]
  keys += [('labels', c) for c in label_columns(f)]
  for key, column in keys:
    if column not in found:
      raise DataError(
        f'dataset.features.{f.name}.{key} reads column {column!r}, which '
        f'{path} lacks{did_you_mean(column, found)}; its columns are '
        f'{", ".join(found)}'
      )


def keys_of(chunk, column: str) -> np.ndarray:
  """object [n]: the key's text as a categorical's; None where missing."""
  raw = chunk[column]
  missing = pd.isna(raw).to_numpy()
  text = raw.astype(str).to_numpy(object)
  text[missing] = None
  return text


def numbers_of(f, key: str, column: str, chunk, offsets, path):
  """float64 [n] of a column a derived feature reads by `key`; an empty or
  bad value is a DataError naming file, row, column, feature and key."""
  raw = chunk[column]
  values = to_float(raw)
  bad = ~np.isfinite(values)
  if bad.any():
    i = int(np.argmax(bad))
    text = 'empty' if pd.isna(raw.iloc[i]) else found(raw, i)
    raise DataError(
      f'{path}: row {offsets[i] + 1} column {column!r} is {text}, expected '
      f'a finite number (dataset.features.{f.name}.{key})'
    )
  return values


def times_of(f, chunk, offsets, path) -> np.ndarray:
  """float64 [n] of a count's or history's time column."""
  return numbers_of(f, 'time', f.time, chunk, offsets, path)


def labels_of(f: sc.Count, chunk, offsets, path) -> np.ndarray:
  """int8 [n, L] 0/1: each label (a column's 0/1 or a condition's truth)."""
  out = np.zeros((len(chunk), len(f.labels)), np.int8)
  for j, text in enumerate(f.labels):
    column = label_column(text)
    x = numbers_of(f, 'labels', column, chunk, offsets, path)
    if column != text:
      x = parse_condition(text, f'dataset.features.{f.name}.labels')(x)
    elif not np.isin(x, (0.0, 1.0)).all():
      i = int(np.argmax(~np.isin(x, (0.0, 1.0))))
      raise DataError(
        f'{path}: row {offsets[i] + 1} column {column!r} is {x[i]:g}, '
        f'expected 0 or 1 (dataset.features.{f.name}.labels; a condition '
        "such as 'rating >= 4' makes one)"
      )
    out[:, j] = x
  return out


def earlier_rows(keys, time):
  """(order, key_start, run_start) of the rows sorted by (key, time, row):
  in that order, the rows of the same key strictly earlier in time than
  position i are [key_start[i], run_start[i]) (equal times excluded)."""
  n = len(keys)
  order = np.lexsort((np.arange(n), time, keys))
  k, t = keys[order], time[order]
  new_key = np.r_[True, k[1:] != k[:-1]]
  new_run = new_key | np.r_[True, t[1:] != t[:-1]]
  key_start = np.maximum.accumulate(np.where(new_key, np.arange(n), 0))
  run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
  return order, key_start, run_start


def past_counts(codes, time, labels):
  """(n [N], sums [N, L]) of each row, int32 (int64 from 2^31 rows): over
  the rows of its key code (-1: missing, counts nothing and is counted by
  nothing) with a time strictly below its own."""
  codes, time = np.asarray(codes), np.asarray(time, np.float64)
  labels = np.asarray(labels).reshape(len(codes), -1)
  N = len(codes)
  dtype = np.int32 if N < 2**31 else np.int64
  order, key_start, run_start = earlier_rows(codes, time)
  present = codes[order] >= 0
  n = np.zeros(N, dtype)
  n[order] = np.where(present, run_start - key_start, 0)
  sums = np.zeros(labels.shape, dtype)
  for j in range(labels.shape[1]):
    before = np.r_[0, np.cumsum(labels[order, j], dtype=np.int64)]  # [0, i)
    got = before[run_start] - before[key_start]
    sums[order, j] = np.where(present, got, 0)
  return n, sums


def raw_values(n, labelled, sums, priors, strength: float) -> np.ndarray:
  """float64 [N, 1 + L]: log1p(n), then (sum + a p) / (labelled + a)."""
  n = np.asarray(n, np.float64)
  labelled = np.asarray(labelled, np.float64)[:, None]
  priors = np.asarray(priors, np.float64)
  rates = (np.asarray(sums, np.float64) + strength * priors) / (
    labelled + strength
  )
  return np.concatenate([np.log1p(n)[:, None], rates], axis=1)


def standardise(f: sc.Count, x: np.ndarray, fitted: dict) -> list:
  """The dense columns: each raw column with its training moments."""
  moments = fitted['moments']
  return [
    (x[:, j] - moments[name]['mean']) / moments[name]['std']
    for j, name in enumerate(outputs(f))
  ]


class Keys:
  """A key column's rows factorised chunk by chunk (`add`), then `codes`:
  an int code a row and the unique texts, never a Python string a row."""

  def __init__(self):
    self.parts = []

  def add(self, text) -> None:
    """A chunk's keys (object, None: missing)."""
    codes, uniques = pd.factorize(pd.Series(text, dtype=object))
    self.parts.append((codes.astype(np.int32), np.asarray(uniques, object)))

  def codes(self):
    """(codes int64 [N], -1 where missing; uniques object [K])."""
    every = [u for _, u in self.parts]
    found = np.concatenate(every) if every else np.array([], object)
    glob, uniques = pd.factorize(pd.Series(found, dtype=object))
    starts = np.cumsum([0] + [len(u) for u in every])
    codes = [
      np.where(c >= 0, glob[np.maximum(c, 0) + at] if len(glob) else -1, -1)
      for (c, _), at in zip(self.parts, starts, strict=False)
    ]
    return np.concatenate(codes) if codes else np.array([], np.int64), uniques


class Log:
  """The counts of a prepared log (table_plan.Plan): each row's n and
  label sums, the priors (training rates), and the per-key totals that
  prediction continues from."""

  def __init__(self, f: sc.Count, keys: Keys, time, labels, train):
    self.feature = f
    codes, uniques = keys.codes()
    self.n, self.sums = past_counts(codes, time, labels)
    rows = max(int(train.sum()), 1)
    sums = labels[train].sum(0, dtype=np.int64)
    self.priors = [float(v) for v in sums / rows]
    present = codes >= 0
    size = len(uniques)
    totals = [
      np.bincount(codes[present], labels[present, j], size).astype(np.int64)
      for j in range(labels.shape[1])
    ]
    self.totals = {
      'keys': [str(u) for u in uniques],
      'n': np.bincount(codes[present], minlength=size).tolist(),
      'sums': [s.tolist() for s in totals],
    }

  def values(self, rows) -> np.ndarray:
    f = self.feature
    n = self.n[rows]
    return raw_values(n, n, self.sums[rows], self.priors, f.prior_strength)


def continued(f: sc.Count, fitted: dict, keys, time, labels=None):
  """float64 [n, 1 + L] raw values of given rows after the log: the log's
  totals of their key plus the given rows strictly earlier (labels None:
  unlabelled rows, counted in n only)."""
  totals = fitted['totals']
  keys = pd.Series(keys, dtype=object)
  at = pd.Index(totals['keys'], dtype=object).get_indexer(keys)
  at = np.where(at >= 0, at, len(totals['keys']))  # The sentinel: 0 rows.
  base_n = np.r_[np.asarray(totals['n'], np.int64), 0][at]
  L = len(f.labels)
  base = np.zeros((len(keys), L), np.int64)
  for j in range(L):
    base[:, j] = np.r_[np.asarray(totals['sums'][j], np.int64), 0][at]
  codes = pd.factorize(keys)[0]
  given = np.zeros((len(keys), L), np.int8) if labels is None else labels
  n, sums = past_counts(codes, time, given)
  labelled = base_n + (0 if labels is None else n)
  return raw_values(
    base_n + n, labelled, base + sums, fitted['priors'], f.prior_strength
  )
