"""The real logs the comparison scripts train on, by name, and their score.

  config_of('kuairand', 'counts+ftrl', seed, data_dir=..., workdirs=...)

Datasets: kuairand (configs/kuairand.py, the latest 10 % of impressions
test, the 10 % before validation), kuairand_days (the same log split by
whole days: train 04-08..04-18, validation 04-19, test 04-20 and 04-21,
written once as three files under `workdirs`), movielens
(configs/movielens_table.py, random 80/10/10), movielens_time (the same
ratings split by time: the latest 10 % test, the 10 % before validation)
and census_paper /
census_library (configs/census.py under each protocol). `parts` is a
configs/common.py PARTS string, the config argument after 'mmoe,'.

The validation score that chooses among configurations (experiments/
real_data.py, experiments/loss_weight_search.py) is the mean over the
trained tasks of AUC (a binary task) or R^2 = 1 - MSE / MSE of the training
mean (a regression), so that tasks of both kinds weigh alike.
"""

import os
import pathlib

import numpy as np

from configs import census, kuairand, movielens_table

DATASETS = (
  'kuairand',
  'kuairand_days',
  'movielens',
  'movielens_time',
  'census_paper',
  'census_library',
)


def data_root() -> pathlib.Path:
  return pathlib.Path(os.environ['MTL_DATA_DIR'])


def days_files(root: pathlib.Path) -> dict:
  """The KuaiRand slice split by whole days, written once under root."""
  import pandas as pd

  folder = pathlib.Path(root) / 'kuairand_days'
  paths = {s: folder / f'{s}.tsv.gz' for s in ('train', 'validation', 'test')}
  if all(p.is_file() for p in paths.values()):
    return paths
  folder.mkdir(parents=True, exist_ok=True)
  source = data_root() / 'kuairand-feedback-slice'
  frame = pd.read_csv(source / 'kuairand_feedback_slice.tsv.gz', sep='\t')
  day = frame['date']
  parts = {
    'train': day <= 20220418,
    'validation': day == 20220419,
    'test': day >= 20220420,
  }
  for split, rows in parts.items():
    tmp = paths[split].with_suffix('.tmp.gz')
    frame[rows].to_csv(tmp, sep='\t', index=False)
    tmp.rename(paths[split])
  return paths


def config_of(dataset: str, parts: str, seed: int, *, data_dir, workdirs):
  """The config of `dataset` with MMoE and `parts`, at `seed`, quiet."""
  if dataset not in DATASETS:
    raise SystemExit(
      f'dataset {dataset!r}, expected one of {", ".join(DATASETS)}'
    )
  arg = f'mmoe,{parts}'
  if dataset.startswith('census'):
    config = census.get_config(arg)
    config.dataset.protocol = dataset.split('_')[1]
  elif dataset.startswith('movielens'):
    config = movielens_table.get_config(arg)
    if dataset == 'movielens_time':
      config.dataset.name = 'movielens_time'
      config.dataset.split = 'time'
      config.dataset.time_column = 'timestamp'
  else:
    config = kuairand.get_config(arg)
    if dataset == 'kuairand_days':
      paths = days_files(pathlib.Path(workdirs))
      d = config.dataset
      d.name = 'kuairand_days'
      d.split = 'files'
      d.path = str(paths['train'])
      d.validation_path = str(paths['validation'])
      d.test_path = str(paths['test'])
  config.seed = seed
  config.progress_bar = False
  config.dataset.data_dir = data_dir
  return config


def default_parts(dataset: str) -> str:
  """The parts the dataset's config file takes with no argument."""
  if dataset.startswith('census'):
    return census.DEFAULT_PARTS
  if dataset.startswith('movielens'):
    return movielens_table.DEFAULT_PARTS
  return kuairand.DEFAULT_PARTS


def load(config):
  """The prepared dataset of `config` (built once, then read)."""
  from mtl.shell import build

  config = config.copy_and_resolve_references()
  return build.load_dataset(config)


def prior_mse(dataset, split: str = 'validation') -> dict:
  """Per regression task, the MSE on `split` of predicting the mean of its
  training labels (as experiments/table_baselines.py's prior)."""
  out = {}
  for i, t in enumerate(dataset.tasks):
    if t.kind != 'regression':
      continue
    y = {}
    for s in ('train', split):
      rows = dataset.splits[s]
      y[s] = np.asarray(rows['labels'][i][rows['mask'][i] > 0], np.float64)
    out[t.name] = float(np.mean(np.square(y[split] - y['train'].mean())))
  return out


def score(results: dict, tasks, prior: dict, split: str = 'validation'):
  """The score (module docstring) of one run's results.json on `split`
  ('validation' or 'test'), `prior` that split's prior_mse."""
  metrics = results[split]
  prefix = 'val' if split == 'validation' else split
  scores = []
  for t in tasks:
    if t.kind == 'regression':
      mse = metrics[f'{prefix}/mse/{t.name}']
      scores.append(1.0 - mse / prior[t.name])
    else:
      scores.append(metrics[f'{prefix}/auc/{t.name}'])
  return float(np.mean(scores))
