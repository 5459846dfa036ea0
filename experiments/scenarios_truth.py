"""How close does a trained model come to the multi-scenario log's truth?

  python experiments/scenarios_truth.py [--seeds=6] [--config_seeds=0]

The log of mtl/data/scenarios.py (click and like that agree in scenarios 0
and 2 and conflict in 1, priors that modulate them by scenario, the true
probabilities as columns) trained by configs/scenarios.py (MMoE), one
generated log per seed (data seed = model seed). On each log's test rows
(the last tenth by time): each task's AUC by the model, by the oracle (the
true probability: the best reachable AUC) and by the priors alone
(bias[k, s] + pop[k, s] x, no interest), overall and per scenario.

Parts: 'test log' (configs/scenarios.py SMALL_LOG, the log of
tests/data/test_scenarios.py's end-to-end test, over --seeds seeds: its
margins) and, with --config_seeds > 0, 'config' (500,000 rows, the
generator's default world). A part's margin is the mean gap to the oracle
plus 3 standard deviations, rounded up to 0.005. Writes
experiments/results/scenarios_truth.{json,md}.
"""

import math
import os
import pathlib
import sys

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402

_CONFIG_SEEDS = flags.DEFINE_integer(
  'config_seeds', 0, "Seeds of the 'config' part (500,000 rows)."
)
harness.define_flags(out='scenarios_truth', workdirs='scenarios_truth', seeds=6)
FLAGS = flags.FLAGS
TASKS = ('click', 'like')


def priors_score(log, task: str):
  """bias[k, s] + pop[k, s] x of the module docstring's equation (5)."""
  import numpy as np

  s = log.scenario.to_numpy()
  sign = np.where(s % 2 == 0, 1.0, -1.0)
  if task == 'click':
    return -1.0 - 0.25 * s + 0.4 * log.item_popularity.to_numpy()
  return -1.5 + 0.25 * s + 0.4 * sign * log.item_popularity.to_numpy()


def measure(part: str, log_kw: dict, seed: int, root: pathlib.Path) -> dict:
  """Generates the log, trains on it (or reuses the run), scores it."""
  import numpy as np
  import pandas as pd

  from configs import scenarios as config_file
  from mtl.core import ranking_metrics as rm
  from mtl.data import scenarios
  from mtl.shell import ensemble

  rows = log_kw['rows']
  data = root / 'data' / part.replace(' ', '_') / f'seed{seed}'
  folder = config_file.scenarios_dir(rows, data)
  if not (folder / scenarios.LOG_FILE).is_file():
    scenarios.write_scenarios_table(folder, seed=seed, **log_kw)
  os.environ['MTL_SCENARIOS_DIR'] = str(data)
  config = config_file.get_config(str(rows))
  config.seed = seed
  config.progress_bar = False
  config.dataset.data_dir = str(root / 'tfds')
  workdir = root / part.replace(' ', '_') / f'seed{seed}'
  result = harness.run(config, workdir, force=FLAGS.force)
  group = ensemble.load(config, workdir)
  pred = ensemble.predict(group, 'test')[0]
  log = pd.read_csv(folder / scenarios.LOG_FILE, sep='\t')
  test = log.iloc[scenarios.split_rows(len(log))[1]]
  labels = group.dataset.splits['test']['labels']
  if not np.array_equal(labels[0], test.click):
    raise AssertionError(f'{folder}: prepared test rows are not the file')
  oracle = scenarios.oracle_aucs(test)
  out = {'part': part, 'seed': seed, 'rows': rows}
  out['users'] = log_kw.get('num_users', 1000)
  out['selected_epoch'] = result.get('selected_epoch')
  for k, task in enumerate(TASKS):
    y, priors = test[task].to_numpy(), priors_score(test, task)
    for s in ('all', *sorted(set(test.scenario))):
      rows_s = np.ones(len(test), bool) if s == 'all' else test.scenario == s
      rows_s = np.asarray(rows_s)
      out[f'{task}/{s}/model'] = rm.auc(y[rows_s], pred[k][rows_s])
      out[f'{task}/{s}/oracle'] = oracle[task][s]
      out[f'{task}/{s}/priors'] = rm.auc(y[rows_s], priors[rows_s])
  return out


def margin(gaps) -> float:
  """mean + 3 sd of the gaps, rounded up to 0.005."""
  m, s = harness.stats.mean_std(gaps)
  return math.ceil(round((m + 3 * s) / 0.005, 6)) * 0.005


def markdown(runs: list[dict]) -> tuple[dict, list[str]]:
  def pm(x):
    return f'{x[0]:.4f} +- {x[1]:.4f}'

  summary, rows = {}, []
  for part in dict.fromkeys(r['part'] for r in runs):
    rs = [r for r in runs if r['part'] == part]
    keys = sorted({k.rsplit('/', 1)[0] for k in rs[0] if k.count('/') == 2})
    for key in keys:
      gaps = [r[f'{key}/oracle'] - r[f'{key}/model'] for r in rs]
      s = {
        w: harness.stats.mean_std([r[f'{key}/{w}'] for r in rs])
        for w in ('model', 'oracle', 'priors')
      }
      s.update(gap=harness.stats.mean_std(gaps), margin=margin(gaps))
      summary[f'{part}/{key}'] = s
      rows.append(
        [part, f'{rs[0]["rows"]:,}', len(rs), key]
        + [pm(s[w]) for w in ('model', 'oracle', 'priors', 'gap')]
        + [f'{s["margin"]:.3f}']
      )
  lines = [
    '## Test AUC by the model, the oracle and the priors alone',
    '',
    'mean +- sd over seeds (data seed = model seed); task/scenario (0 and 2',
    'agree, 1 conflicts); gap = oracle - model; margin = mean gap + 3 sd,',
    'rounded up to 0.005.',
    '',
  ]
  lines += harness.markdown_table(
    ['part', 'rows', 'seeds', 'task/scenario', 'model', 'oracle', 'priors']
    + ['gap', 'margin'],
    rows,
    'lrrlrrrrr',
  )
  return summary, lines


def main(argv):
  del argv
  from configs import scenarios as config_file

  root = pathlib.Path(FLAGS.workdirs)
  parts = {'test log': (dict(config_file.SMALL_LOG), range(FLAGS.seeds))}
  if _CONFIG_SEEDS.value:
    parts['config'] = (dict(rows=500_000), range(_CONFIG_SEEDS.value))
  runs = []
  for part, (log_kw, seeds) in parts.items():
    for seed in seeds:
      runs.append(measure(part, log_kw, seed, root))
      print({k: v for k, v in runs[-1].items() if '/all/' in k}, flush=True)
  summary, lines = markdown(runs)
  record = {'summary': summary, 'runs': runs}
  harness.write_results('scenarios_truth', record, lines, out=FLAGS.out)


if __name__ == '__main__':
  harness.run_main(main)
