"""Every architecture, 2018 to 2024, on the same data: equal weighting, N seeds.

  python experiments/architectures.py [--datasets=census,synthetic_0.5,...]
      [--models=mmoe,ple,...] [--seeds=5] [--jobs=2]
      [--workdirs=workdirs/architectures] [--out=...]

Datasets (each its config file's protocol; model selection on the first
task's validation metric; model seeds 0..N-1, the data fixed). Each model
runs at its own learning rate: the config's, a third of it or three times
it (LR_FACTORS), the one whose seed-0 run scores best on validation (the
first task's AUC, or minus its MSE); the other seeds then run at that rate.
One rate for all would favour the model the config was tuned for: on the
scenarios log PEPNet at the config's 0.03 was 0.018 AUC behind MMoE, and
at 0.01 ahead of it on validation.

  census         configs/census.py:<model>, the MMoE paper's protocol
  synthetic_<p>  configs/synthetic.py:<model> with dataset.p = <p>: the MMoE
                 paper's regression pair at task correlation p (0.5, 0.9, 1.0)
  scenarios      configs/scenarios.py:500000 (the generated multi-scenario
                 log, mtl/data/scenarios.py, world seed 0), also per scenario
                 with the gap to the oracle's AUC (the true probabilities')
  movielens      configs/movielens_table.py (MovieLens-100K, table path)
  kuairand       configs/kuairand.py (the KuaiRand slice, table path)

A model runs as `--config.model_name=<model>` does: the keys the config file
sets that the model takes (e.g. num_experts), its signature's defaults for
the rest; on the scenarios log PEPNet's EPNet reads the scenario
(`model.domain_features`), as in its paper. A pair the config refuses (one
ConfigError line) is reported as such, not trained.

The results files are rewritten after each dataset. Reported per dataset
and model: each task's test metric (AUC, higher is better; MSE for a
regression, lower is better) mean +- standard error over
seeds; the paired difference from MMoE on the same seeds, in standard errors
(a tie within 2 SE); the parameter count; training examples/s (runs share
the cores two at a time: rough); for mixture-of-experts models, the experts
in use: exp(entropy) of each task's mean gate weights at the last logged
diagnostics step, averaged over tasks and seeds (the number of experts a
task spreads its weight over; 1 = collapsed onto one expert), shown with
how many experts the gate weighs (HoME's gates weigh 3 at its defaults,
MMoE's 8: compare the two numbers, not the first alone). Then each
2021-2024 paper's claim against these numbers. Writes
experiments/results/architectures.{json,md} (or --out).
"""

import copy
import json
import math
import os
import pathlib
import sys

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402
from experiments.harness import stats  # noqa: E402

DATASETS = (
  'census',
  'scenarios',
  'synthetic_0.5',
  'synthetic_0.9',
  'synthetic_1.0',
  'movielens',
  'kuairand',
)
SCENARIO_ROWS = 500_000
_DATASETS = flags.DEFINE_list('datasets', list(DATASETS), 'Datasets to run.')
_MODELS = flags.DEFINE_list(
  'models', None, 'Default: every architecture configs/census.py runs.'
)
_JOBS = flags.DEFINE_integer('jobs', 2, 'Runs at once, one process each.')
harness.define_flags(out='architectures', workdirs='architectures', seeds=5)
FLAGS = flags.FLAGS
TIE_SE = 2.0  # As experiments/weighting_census.py.
# Each model's learning rate: the dataset config's, a third of it or three
# times it, whichever scores best on validation with seed 0 (val_score).
LR_FACTORS = (1.0, 1 / 3, 3.0)
BASELINE = 'mmoe'
# Each 2021-2024 paper's claim: (architecture, its baseline, datasets).
CLAIMS = (
  (
    'pepnet',
    'mmoe',
    'PEPNet (KDD 2023) beats MMoE where the tasks depend on the scenario',
    ('scenarios',),
  ),
  (
    'stem',
    'ple',
    'STEM-Net (AAAI 2024) beats PLE under negative transfer '
    '(weakly related tasks)',
    ('synthetic_0.5', 'scenarios'),
  ),
  ('adatt', 'ple', 'AdaTT (KDD 2023) beats PLE', DATASETS),
  (
    'home',
    'mmoe',
    "HoME (2024) fixes MMoE's expert collapse (more experts "
    'in use) and beats it',
    DATASETS,
  ),
  (
    'dselect_k',
    'mmoe',
    'DSelect-k (NeurIPS 2021) matches or beats MMoE with k experts a task',
    DATASETS,
  ),
  (
    'dbmtl',
    'shared_bottom',
    'DBMTL (2019) beats a shared bottom by '
    "feeding each task's tower the tasks it depends on",
    DATASETS,
  ),
)


def config_of(dataset: str, model: str, data_root: pathlib.Path):
  """The config of `model` on `dataset` (module docstring)."""
  if dataset == 'census':
    from configs import census

    return census.get_config(model)
  if dataset.startswith('synthetic_'):
    from configs import synthetic

    config = synthetic.get_config(model)
    config.dataset.p = float(dataset.split('_', 1)[1])
    return config
  if dataset == 'scenarios':
    from configs import scenarios

    os.environ['MTL_SCENARIOS_DIR'] = str(data_root)
    config = scenarios.get_config(str(SCENARIO_ROWS))
  elif dataset == 'movielens':
    from configs import movielens_table

    config = movielens_table.get_config()
  elif dataset == 'kuairand':
    from configs import kuairand

    config = kuairand.get_config()
  else:
    raise SystemExit(
      f'--datasets: {dataset!r}, expected some of {", ".join(DATASETS)}'
    )
  config.model_name = model
  if dataset == 'scenarios' and model == 'pepnet':
    # The scenario is PEPNet's domain side, as the paper's EPNet reads it.
    config.model.domain_features = ('scenario',)
  return config


def refusal(config) -> str | None:
  """The one-line ConfigError a config gets before training, or None."""
  from mtl.errors import ConfigError
  from mtl.shell import validate

  try:
    validate.check_config(copy.deepcopy(config))
  except ConfigError as e:
    return str(e)
  return None


def tasks_of(result: dict) -> list[str]:
  """The tasks of a run, in its order: those with a test AUC or MSE."""
  tasks = []
  for key in result['test']:
    kind, _, task = key.removeprefix('test/').partition('/')
    if kind in ('auc', 'mse') and task not in tasks:
      tasks.append(task)
  return tasks


def experts_in_use(workdir: pathlib.Path) -> dict | None:
  """{'effective': exp(entropy) of each task's mean gate weights at the last
  logged diagnostics row, 'gated': how many experts that gate weighs}, each
  averaged over tasks and levels; None without gates."""
  last = None
  with open(workdir / 'metrics.jsonl') as f:
    for line in f:
      row = json.loads(line)
      if any(k.startswith('diag/gate/') for k in row):
        last = row
  if last is None:
    return None
  gates = {}
  for key, value in last.items():
    if key.startswith('diag/gate/'):
      level, task, _ = key[len('diag/gate/') :].rsplit('/', 2)
      gates.setdefault((level, task), []).append(value)
  effective = []
  for weights in gates.values():
    total = sum(weights)
    p = [w / total for w in weights if w > 0]
    effective.append(math.exp(-sum(q * math.log(q) for q in p)))
  return {
    'effective': stats.mean(effective),
    'gated': stats.mean([len(w) for w in gates.values()]),
  }


def scenario_aucs(config, workdir, data_root) -> dict:
  """Per task and scenario: the model's test AUC and the oracle's."""
  import numpy as np
  import pandas as pd

  from configs import scenarios as config_file
  from mtl.core import ranking_metrics as rm
  from mtl.data import scenarios
  from mtl.shell import ensemble

  folder = config_file.scenarios_dir(SCENARIO_ROWS, data_root)
  group = ensemble.load(config, workdir)
  pred = ensemble.predict(group, 'test')[0]
  log = pd.read_csv(folder / scenarios.LOG_FILE, sep='\t')
  test = log.iloc[scenarios.split_rows(len(log))[1]]
  if not np.array_equal(group.dataset.splits['test']['labels'][0], test.click):
    raise SystemExit(f'{folder}: the prepared test rows are not the file')
  oracle = scenarios.oracle_aucs(test)
  out = {}
  for k, task in enumerate(config.dataset.task_order):
    y = test[task].to_numpy()
    for s in sorted(set(test.scenario)):
      rows = np.asarray(test.scenario == s)
      out[f'{task}/{s}'] = {
        'model': rm.auc(y[rows], pred[k][rows]),
        'oracle': oracle[task][s],
      }
  return out


def summarize(dataset, models, runs) -> list[dict]:
  """One row per model: metrics over seeds, paired difference from MMoE."""
  rows = []
  for model in models:
    r = runs.get(model)
    if isinstance(r, str):
      rows.append({'model': model, 'refused': r})
      continue
    row = {'model': model, 'tasks': {}}
    base = runs.get(BASELINE)
    ref = None
    if model != BASELINE and isinstance(base, dict):
      ref = [x['test'] for x in base['results']]
    tests = [x['test'] for x in r['results']]
    for task in r['tasks']:
      cell = stats.metric_cell(tests, task, ref, TIE_SE)
      row['tasks'][task] = cell
    row['learning_rate'] = r.get('learning_rate')
    row['lr_grid'] = r.get('lr_grid')
    row['num_params'] = r['results'][0].get('num_params')
    row['examples_per_s'] = stats.mean(
      [x.get('train_examples_per_s') or 0.0 for x in r['results']]
    )
    used = [e for e in r['experts_in_use'] if e is not None]
    row['experts_in_use'] = (
      {k: stats.mean([e[k] for e in used]) for k in ('effective', 'gated')}
      if used
      else None
    )
    if r.get('scenarios'):
      row['scenarios'] = {
        key: {
          'model': stats.mean([s[key]['model'] for s in r['scenarios']]),
          'model_se': stats.standard_error(
            [s[key]['model'] for s in r['scenarios']]
          ),
          'oracle': r['scenarios'][0][key]['oracle'],
        }
        for key in r['scenarios'][0]
      }
    rows.append(row)
  return rows


def _experts_cell(e: dict) -> str:
  return f'{e["effective"]:.2f} of {e["gated"]:g}'


def _scenario_cell(c: dict) -> str:
  return f'{c["model"]:.4f} ({c["model"] - c["oracle"]:+.4f})'


def markdown(record: dict) -> list[str]:
  lines = [
    'Test metric per task: mean +- standard error over model seeds '
    f'{record["seeds"]}, equal weighting, each model at its learning rate '
    "(lr: the dataset config's, a third of it or three times it, the best "
    'validation score of the first task with seed 0); in brackets the '
    f'paired difference from `{BASELINE}` on the same seeds and that '
    f'difference in standard errors (a tie within {TIE_SE:g} SE). Experts '
    'in use: '
    "exp(entropy) of a task's mean gate "
    'weights at the end of training, of the experts the gate weighs (1 = one '
    'expert).',
  ]
  for dataset, rows in record['datasets'].items():
    tasks = next((list(r['tasks']) for r in rows if 'tasks' in r), [])
    lines += ['', f'### {dataset}', '']
    table = []
    for r in rows:
      if 'refused' in r:
        table.append(
          [
            f'`{r["model"]}`',
            *(['-'] * len(tasks)),
            f'refused: {r["refused"]}',
            '-',
            '-',
            '-',
            '-',
          ]
        )
        continue
      verdicts = ', '.join(r['tasks'][t].get('verdict', '-') for t in tasks)
      used = r['experts_in_use']
      table.append(
        [
          f'`{r["model"]}`',
          *(stats.cell_text(r['tasks'][t]) for t in tasks),
          verdicts,
          f'{r["learning_rate"]:.3g}' if r.get('learning_rate') else '-',
          f'{r["num_params"]:,}' if r['num_params'] else '-',
          f'{r["examples_per_s"]:,.0f}',
          '-' if used is None else _experts_cell(used),
        ]
      )
    lines += harness.markdown_table(
      [
        'model',
        *tasks,
        f'vs {BASELINE}',
        'lr',
        'params',
        'ex/s',
        'experts in use',
      ],
      table,
      'l' + 'r' * len(tasks) + 'lrrrr',
    )
    keys = next((list(r['scenarios']) for r in rows if r.get('scenarios')), [])
    if keys:
      lines += ['', 'Per scenario: test AUC (gap to the oracle).', '']
      oracle = next(r['scenarios'] for r in rows if r.get('scenarios'))
      lines += harness.markdown_table(
        ['model', *keys],
        [['oracle', *(f'{oracle[k]["oracle"]:.4f}' for k in keys)]]
        + [
          [
            f'`{r["model"]}`',
            *(_scenario_cell(r['scenarios'][k]) for k in keys),
          ]
          for r in rows
          if r.get('scenarios')
        ],
        'l' + 'r' * len(keys),
      )
  lines += ['', "### The papers' claims", '']
  for text in claims(record['datasets']):
    lines.append(f'- {text}')
  return lines


def claims(datasets: dict) -> list[str]:
  """Each claim against the measured rows: paired differences in SE."""
  out = []
  for model, base, claim, where in CLAIMS:
    found = []
    for dataset in where:
      rows = {r['model']: r for r in datasets.get(dataset, [])}
      a, b = rows.get(model), rows.get(base)
      if not a or not b or 'tasks' not in a or 'tasks' not in b:
        continue
      for task, cell in a['tasks'].items():
        values, ref = cell['values'], b['tasks'][task]['values']
        diff, in_se = stats.paired_diff_in_se(values, ref)
        if not cell['higher_is_better']:
          diff, in_se = -diff, -in_se
        word = (
          'tie' if abs(in_se) < TIE_SE else ('better' if in_se > 0 else 'worse')
        )
        found.append(f'{dataset} {task} {diff:+.5f} ({in_se:+.1f} SE, {word})')
    if model == 'home':
      for dataset in where:
        rows = {r['model']: r for r in datasets.get(dataset, [])}
        a, b = rows.get(model), rows.get(base)
        if a and b and a.get('experts_in_use') and b.get('experts_in_use'):
          found.append(
            f'{dataset} experts in use '
            f'{_experts_cell(a["experts_in_use"])} vs '
            f'{_experts_cell(b["experts_in_use"])}'
          )
    verdict = '; '.join(found) if found else 'not measured (no runs)'
    out.append(
      f'**{claim}.** `{model}` vs `{base}` (better = the claim '
      f'holds): {verdict}.'
    )
  return out


def job(config, model, factor, seed, folder) -> tuple:
  """(config, workdir) of one run: the dataset's learning rate times
  `factor` (its workdir <model>_seed<k>, else <model>_lr<rate>_seed<k>)."""
  c = copy.deepcopy(config)
  c.seed = seed
  c.progress_bar = False
  rate = config.optimizer.learning_rate * factor
  c.optimizer.learning_rate = rate
  name = model if factor == 1 else f'{model}_lr{rate:g}'
  return c, folder / f'{name}_seed{seed}'


def val_score(result: dict) -> float:
  """The validation score that picks a model's learning rate: the first
  task's AUC, or minus its MSE (a regression), at the selected epoch."""
  task = tasks_of(result)[0]
  val = result['validation']
  if f'val/auc/{task}' in val:
    return val[f'val/auc/{task}']
  return -val[f'val/mse/{task}']


def best_factor(by_factor: dict) -> float:
  """The factor whose run scores best on validation (val_score); a tie
  keeps the dataset's own rate (factor 1)."""
  return max(LR_FACTORS, key=lambda f: (val_score(by_factor[f]), f == 1))


def main(argv):
  del argv
  from configs.census import census_models

  models = _MODELS.value or census_models()
  if BASELINE not in models:
    models = [BASELINE, *models]
  root = pathlib.Path(FLAGS.workdirs)
  data_root = root / 'data'
  record = {'seeds': list(range(FLAGS.seeds)), 'datasets': {}}
  for dataset in _DATASETS.value:
    if dataset == 'scenarios':
      from configs import scenarios as config_file
      from mtl.data import scenarios

      folder = config_file.scenarios_dir(SCENARIO_ROWS, data_root)
      if not (folder / scenarios.LOG_FILE).is_file():
        scenarios.write_scenarios_table(folder, seed=0, rows=SCENARIO_ROWS)
    runs, chosen = {}, {}
    configs = {}
    for model in models:
      config = config_of(dataset, model, data_root)
      why = refusal(config)
      if why is not None:
        print(f'{dataset} {model}: refused: {why}', flush=True)
        runs[model] = why
        continue
      configs[model] = config
    # 1. Seed 0 at each learning rate of the grid; each model keeps the
    # one with the best validation score of the first task.
    jobs, keys = [], []
    for model, config in configs.items():
      for factor in LR_FACTORS:
        jobs.append(job(config, model, factor, 0, root / dataset))
        keys.append((model, factor))
    done = harness.run_all(
      jobs, processes=_JOBS.value, force=FLAGS.force, refused=True
    )
    grid = {}
    for (model, factor), result in zip(keys, done, strict=True):
      if isinstance(result, str):  # Refused: the same for every rate.
        runs[model] = result
        continue
      grid.setdefault(model, {})[factor] = result
    for model, by_factor in grid.items():
      if not isinstance(runs.get(model), str):
        chosen[model] = best_factor(by_factor)
    # 2. The other seeds at the chosen rate.
    jobs, keys = [], []
    for model, factor in chosen.items():
      for seed in range(FLAGS.seeds):
        jobs.append(job(configs[model], model, factor, seed, root / dataset))
        keys.append(model)
    done = harness.run_all(
      jobs, processes=_JOBS.value, force=FLAGS.force, refused=True
    )
    for model, result, (config, workdir) in zip(keys, done, jobs, strict=True):
      r = runs.setdefault(
        model,
        {
          'tasks': tasks_of(result),
          'results': [],
          'experts_in_use': [],
          'scenarios': [],
          'learning_rate': config.optimizer.learning_rate,
          'lr_grid': {
            f'{configs[model].optimizer.learning_rate * f:g}': val_score(
              grid[model][f]
            )
            for f in LR_FACTORS
          },
        },
      )
      r['results'].append(result)
      r['experts_in_use'].append(experts_in_use(workdir))
      if dataset == 'scenarios':
        r['scenarios'].append(scenario_aucs(config, workdir, data_root))
    record['datasets'][dataset] = summarize(dataset, models, runs)
    # After each dataset, so a long run shows what it has so far.
    harness.write_results(
      'architectures', record, markdown(record), out=FLAGS.out
    )


if __name__ == '__main__':
  harness.run_main(main)
