"""The "Your own data" example of docs/data.md, run as the page says.

`write_csv` writes the page's file (interactions of made-up users with
items); `mtl-train --config=configs/example_table.py
--config.dataset.path=<it>` prepares and trains it in a subprocess, with no
Python of the user's. Oracles: pandas for the split and the vocabularies
(the prepared metadata), and labels that are deterministic functions of a
feature (click of the category, buy of the price among clicks), which a
trained model separates almost perfectly.
"""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from tests import cli

REPO = pathlib.Path(__file__).resolve().parents[2]
CATEGORIES = ('books', 'garden', 'music', 'shoes', 'toys')
TAGS = ('red', 'blue', 'sale', 'new', 'gift')


def write_csv(path, n_users=100, per_user=24, seed=0) -> pd.DataFrame:
  """The example's file: click iff the category is books or shoes; buy
  (clicked rows) iff the price is below 10; dwell time in seconds."""
  rng = np.random.default_rng(seed)
  n = n_users * per_user
  df = pd.DataFrame(
    {
      'user_id': [f'u{i}' for i in np.repeat(np.arange(n_users), per_user)],
      'item_id': [f'i{i}' for i in rng.zipf(1.3, n) % 400],
      'ts': rng.permutation(n) + 1000,
      'price': rng.gamma(2.0, 6.0, n).round(2),
      'category': rng.choice(CATEGORIES, n),
      'tags': [
        '|'.join(rng.choice(TAGS, rng.integers(0, 4))) for _ in range(n)
      ],
    }
  )
  df['click'] = df.category.isin(['books', 'shoes']).astype(int)
  df['buy'] = df.click * (df.price < 10)
  df['dwell_s'] = (df.click * rng.gamma(2.0, 15.0, n)).round(1)
  df.loc[rng.choice(n, 20, replace=False), 'price'] = np.nan
  df.to_csv(path, index=False)
  return df


def test_a_csv_trains_from_the_example_config(tmp_path):
  write_csv(tmp_path / 'interactions.csv')
  df = pd.read_csv(tmp_path / 'interactions.csv')  # As the oracle reads it.
  env = cli.one_device_env(JAX_PLATFORMS='cpu')
  proc = cli.run(
    [
      '--config=configs/example_table.py',
      f'--workdir={tmp_path / "run"}',
      f'--config.dataset.path={tmp_path / "interactions.csv"}',
      f'--config.dataset.data_dir={tmp_path / "tfds"}',
      '--config.progress_bar=false',
    ],
    timeout=300,
    env=env,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert result['tasks'] == ['click', 'buy', 'dwell']
  assert result['test']['test/auc/click'] > 0.95
  assert result['test']['test/auc/buy'] > 0.95
  assert np.isfinite(result['test']['test/mse/dwell'])

  # The split and the vocabularies, against pandas.
  ordered = df.assign(row=np.arange(len(df))).sort_values(['ts', 'row'])
  last = ordered.groupby('user_id').row.nth(-1)
  before = ordered.groupby('user_id').row.nth(-2)
  train = df.drop(index=np.r_[last, before])
  (meta,) = (tmp_path / 'tfds').glob('table/example-*/1.0.0/metadata.json')
  meta = json.loads(meta.read_text())
  assert meta['rows'] == {
    'train': len(train),
    'validation': df.user_id.nunique(),
    'test': df.user_id.nunique(),
  }
  tables = meta['tables']
  assert tables['category']['vocabulary'] == sorted(train.category.unique())
  counts = train.item_id.value_counts()
  assert tables['item_id']['vocabulary'] == sorted(counts[counts >= 2].index)
  tags = train.tags.dropna().str.split('|').explode()
  assert tables['tags']['vocabulary'] == sorted(tags.unique())

  # dwell is log1p'd and standardised: its rmse is in log1p(seconds), the
  # mse's root times the training std of log1p(dwell_s) on clicked rows.
  std = np.log1p(train.dwell_s[train.click == 1]).std(ddof=0)
  mse = result['test']['test/mse/dwell']
  assert result['test']['test/rmse/dwell'] == pytest.approx(
    np.sqrt(mse) * std, rel=1e-6
  )
