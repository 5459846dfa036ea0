"""Simple baselines for the `table` configs' datasets, on the same splits.

  MTL_DATA_DIR=../shared/data python experiments/table_baselines.py

For configs/movielens_table.py (u.data; ratings at random 80/10/10, seed 0)
and configs/kuairand.py (the feedback slice; by time, the latest 10 % test,
the 10 % before validation), the splits are rebuilt here with pandas and
numpy as table_builder.py defines them, then per task:

- prior: the training rate (AUC 0.5; MSE of the training mean);
- user / item: the smoothed training rate (or mean) of the row's user or
  item, (sum + 10 * prior) / (count + 10), the prior where unseen;
- logistic (ridge for regression): scikit-learn on one-hot user and item
  ids (training vocabulary) plus the config's dense features (KuaiRand:
  log1p duration, standardised, with a 0-duration flag, and hourmin), C=1.

Regression labels are transformed and scaled as the configs do (MovieLens:
rating centred; KuaiRand: log1p play time standardised with the training
moments), so MSEs compare with mtl-train's. Writes
experiments/results/table_baselines.{json,md}.
"""

import json
import os
import pathlib

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / 'experiments' / 'results' / 'table_baselines'
SMOOTH = 10.0


def movielens(data: pathlib.Path):
  df = pd.read_csv(
    data / 'movielens-100k' / 'u.data',
    sep='\t',
    names=['user', 'item', 'rating', 'ts'],
  )
  n = len(df)
  order = np.random.default_rng(0).permutation(n)
  codes = np.zeros(n, np.int8)
  codes[order[: round(0.1 * n)]] = 1
  codes[order[round(0.1 * n) : round(0.1 * n) + round(0.1 * n)]] = 2
  tasks = {
    'like': ('binary', (df.rating >= 4).astype(float).to_numpy()),
    'rating': ('regression', df.rating.astype(float).to_numpy()),
  }
  y = tasks['rating'][1]
  tasks['rating'] = ('regression', y - y[codes == 0].mean())
  return df, codes, tasks, np.zeros((n, 0))


def kuairand(data: pathlib.Path):
  path = data / 'kuairand-feedback-slice' / 'kuairand_feedback_slice.tsv.gz'
  df = pd.read_csv(path, sep='\t').rename(
    columns={'user_id': 'user', 'video_id': 'item'}
  )
  n = len(df)
  order = np.lexsort((np.arange(n), df.time_ms.to_numpy()))
  n_val = n_test = round(0.1 * n)
  codes = np.zeros(n, np.int8)
  codes[order[n - n_test :]] = 2
  codes[order[n - n_test - n_val : n - n_test]] = 1
  play = np.log1p(df.play_time_ms.to_numpy(float))
  train = play[codes == 0]
  tasks = {
    name: ('binary', df[column].to_numpy(float))
    for name, column in (
      ('click', 'is_click'),
      ('long_view', 'long_view'),
      ('like', 'label'),
      ('comment', 'is_comment'),
      ('follow', 'is_follow'),
    )
  }
  tasks['play_time'] = ('regression', (play - train.mean()) / train.std())
  duration = np.log1p(df.duration_ms.to_numpy(float))
  dense = np.stack([duration, df.duration_ms == 0, df.hourmin], 1)
  dense = dense.astype(float)
  mu, sd = dense[codes == 0].mean(0), dense[codes == 0].std(0)
  return df, codes, tasks, (dense - mu) / sd


def rate_of(keys, y, train, prior):
  """Smoothed training rate (or mean) per key; the prior where unseen."""
  frame = pd.DataFrame({'k': keys[train], 'y': y[train]})
  g = frame.groupby('k').y.agg(['sum', 'count'])
  rate = (g['sum'] + SMOOTH * prior) / (g['count'] + SMOOTH)
  return pd.Series(keys).map(rate).fillna(prior).to_numpy()


def one_hot(df, codes, dense):
  blocks = []
  for column in ('user', 'item'):
    vocab = {v: i for i, v in enumerate(np.unique(df[column][codes == 0]))}
    ids = df[column].map(vocab)
    seen = ids.notna().to_numpy()
    rows = np.flatnonzero(seen)
    blocks.append(
      sparse.csr_matrix(
        (np.ones(len(rows)), (rows, ids[seen].astype(int))),
        shape=(len(df), len(vocab)),
      )
    )
  blocks.append(sparse.csr_matrix(dense))
  return sparse.hstack(blocks).tocsr()


def score(kind, y, p):
  if kind == 'binary':
    return float(roc_auc_score(y, p))
  return float(np.mean((y - p) ** 2))


def baselines(df, codes, tasks, dense) -> dict:
  x = one_hot(df, codes, dense)
  train = codes == 0
  out = {}
  for name, (kind, y) in tasks.items():
    prior = y[train].mean()
    preds = {
      'prior': np.full(len(y), prior),
      'user': rate_of(df.user.to_numpy(), y, train, prior),
      'item': rate_of(df.item.to_numpy(), y, train, prior),
    }
    if kind == 'binary':
      model = LogisticRegression(C=1.0, max_iter=2000).fit(x[train], y[train])
      preds['logistic'] = model.predict_proba(x)[:, 1]
    else:
      preds['logistic'] = Ridge(alpha=1.0).fit(x[train], y[train]).predict(x)
    out[name] = {
      method: {
        split: score(kind, y[codes == code], p[codes == code])
        for code, split in ((1, 'validation'), (2, 'test'))
      }
      for method, p in preds.items()
    }
    out[name]['metric'] = 'auc' if kind == 'binary' else 'mse'
  return out


def markdown(results: dict) -> str:
  lines = []
  for dataset, tasks in results.items():
    lines += [
      f'### {dataset}',
      '',
      '| task | metric | prior | user | item | logistic / ridge |',
      '|---|---|---:|---:|---:|---:|',
    ]
    for task, r in tasks.items():
      cells = [
        f'{r[m]["test"]:.4f}' for m in ('prior', 'user', 'item', 'logistic')
      ]
      row = [task, f'test {r["metric"]}', *cells]
      lines.append('| ' + ' | '.join(row) + ' |')
    lines.append('')
  return '\n'.join(lines)


def main():
  default = REPO.parent / 'shared' / 'data'
  data = pathlib.Path(os.environ.get('MTL_DATA_DIR', default))
  results = {
    'movielens_table': baselines(*movielens(data)),
    'kuairand': baselines(*kuairand(data)),
  }
  OUT.with_suffix('.json').write_text(json.dumps(results, indent=2) + '\n')
  OUT.with_suffix('.md').write_text(markdown(results))
  print(markdown(results))


if __name__ == '__main__':
  main()
