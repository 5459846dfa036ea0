"""mtl against a tuned logistic regression and a GBDT on the real logs.

  MTL_DATA_DIR=../shared/data python experiments/real_data.py \
      [--datasets=kuairand,kuairand_days,movielens,movielens_time,\
census_paper,census_library] [--seeds=5] [--jobs=2]

For each dataset, every candidate of CANDIDATES (a configs/<file>.py
argument 'mmoe,PART+PART', configs/common.py PARTS) trains --seeds runs
(seeds 0..N-1). The best candidate is chosen on VALIDATION only: the mean
over its tasks of the seeds' mean validation score (AUC of a binary task;
R^2 = 1 - MSE / MSE of the training mean, of a regression). 'plain' is MMoE
as the config had it before these parts existed.

The baselines (experiments/table_baselines.py) see the same split through
mtl's loader: a logistic / ridge regression with C chosen on validation and
a HistGradientBoosting tree tuned on validation, each fitted on the plain
config's inputs and on each set of count features a candidate derives
(`counts`, `user_rates`); per task the input set better on validation is
reported.

Datasets: kuairand (configs/kuairand.py, the latest 10 % of impressions
test, the 10 % before validation), kuairand_days (the same log split by
whole days: train 04-08..04-18, validation 04-19, test 04-20 and 04-21,
written once as three files under --workdirs), movielens
(configs/movielens_table.py, random 80/10/10), movielens_time (the same
ratings split by time) and census (configs/census.py, the paper's and the
library protocol): experiments/harness/real_logs.py. A dataset not in
--datasets keeps its results from the results file.

Per task: test AUC (RMSE of a regression, in the label's units after its
transform) mean +- standard error over seeds; the number of test positives;
and whether the best candidate beats both baselines (a task with fewer than
100 test positives is reported, not judged). Writes
experiments/results/real_data.{json,md}.
"""

import json
import pathlib
import sys

import numpy as np
from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness, table_baselines  # noqa: E402
from experiments.harness import real_logs, results, runner, stats  # noqa: E402

CANDIDATES = {
  'kuairand': (
    'plain',
    'counts',
    'counts+ftrl',
    'counts+ftrl+per_task',
    'counts+ftrl+per_task+rare+l2+long',
    'counts+ftrl+per_task+rare+l2+long+plr',
    'counts+ftrl+per_task+rare+l2+long+weights',
  ),
  'movielens': (
    'plain',
    'ftrl',
    'ftrl+per_task',
    'counts+ftrl+per_task',
    'counts+ftrl+per_task+l2',
    'user_rates+ftrl+per_task',
    'user_rates+ftrl+per_task+l2',
    'ftrl+dcn+per_task',
  ),
  'census': (
    'plain',
    'ftrl',
    'ftrl+dcn',
    'ftrl+dcn+per_task',
    'plr',
  ),
}
CANDIDATES['kuairand_days'] = CANDIDATES['kuairand']
CANDIDATES['movielens_time'] = CANDIDATES['movielens']
CANDIDATES['census_paper'] = CANDIDATES['census_library'] = CANDIDATES['census']
MIN_POSITIVES = 100
# The parts that derive count features (configs/common.py count_features).
COUNTING = {'counts', 'user_rates'}
# The GBDT's grid, chosen on validation (census: 200k rows on 2 cores, so
# one learning rate; its chosen iteration counts stay well inside the cap).
GBDT_GRID = {
  'default': dict(lrs=[0.05, 0.2], leaves=[15, 63], max_iter=300, stride=5),
  'census': dict(lrs=[0.2], leaves=[15, 63], max_iter=150, stride=5),
}

_DATASETS = flags.DEFINE_list(
  'datasets',
  list(real_logs.DATASETS),
  'Datasets to run (module docstring).',
)
_CANDIDATES = flags.DEFINE_list(
  'candidates', [], 'Override: the parts strings to try on every dataset.'
)
_DATA_DIR = flags.DEFINE_string('data_dir', 'workdirs/tfds', 'TFDS cache.')
_JOBS = flags.DEFINE_integer('jobs', 2, 'Runs trained at once.')
_GBDT_SEEDS = flags.DEFINE_integer('gbdt_seeds', 1, "The GBDT's seeds.")
_RENDER = flags.DEFINE_bool(
  'render', False, 'Only rewrite the tables from the results file.'
)
harness.define_flags(out='real_data', workdirs='real_data', seeds=5)
FLAGS = flags.FLAGS


def config_of(dataset: str, parts: str, seed: int):
  return real_logs.config_of(
    dataset, parts, seed, data_dir=_DATA_DIR.value, workdirs=FLAGS.workdirs
  )


load = real_logs.load


def baselines(dataset: str, inputs: str, data, gbdt) -> dict:
  """table_baselines.baselines of `data`, computed once per dataset,
  input set and grid (deterministic: fixed seeds), then read from
  --workdirs/<dataset>/baselines_<inputs>.json."""
  import json

  path = pathlib.Path(FLAGS.workdirs) / dataset / f'baselines_{inputs}.json'
  rows = {s: int(np.shape(d['labels'])[-1]) for s, d in data.splits.items()}
  key = dict(gbdt=gbdt, seeds=_GBDT_SEEDS.value, rows=rows)
  if path.is_file() and not FLAGS.force:
    stored = json.loads(path.read_text())
    if stored['key'] == runner.canonical(key):
      return stored['baselines']
  out = table_baselines.baselines(
    data, c_grid=np.logspace(-3, 2, 6), seeds=_GBDT_SEEDS.value, gbdt=gbdt
  )
  path.parent.mkdir(parents=True, exist_ok=True)
  results.write_json(path, dict(key=key, baselines=out))
  return runner.canonical(out)


def run_dataset(dataset: str) -> dict:
  candidates = _CANDIDATES.value or CANDIDATES[dataset]
  seeds = range(FLAGS.seeds)
  jobs = [
    (
      config_of(dataset, p, s),
      pathlib.Path(FLAGS.workdirs) / dataset / p / f's{s}',
    )
    for p in candidates
    for s in seeds
  ]
  # Prepare each distinct dataset once before runs share it.
  for parts in candidates:
    load(config_of(dataset, parts, 0))
  results = runner.run_all(jobs, processes=_JOBS.value, force=FLAGS.force)
  runs = {
    p: results[i * len(seeds) : (i + 1) * len(seeds)]
    for i, p in enumerate(candidates)
  }
  plain = load(config_of(dataset, 'plain', 0))
  tasks = [t for t in plain.tasks if t.train]
  gbdt = dict(GBDT_GRID.get(dataset.split('_')[0], GBDT_GRID['default']))
  bl = {'plain': baselines(dataset, 'plain', plain, gbdt)}
  prior = {t.name: bl['plain'][t.name]['prior']['validation'] for t in tasks}

  def val_score(parts):
    # The score is affine in each metric, so the seeds' mean score is the
    # score of the seeds' mean metrics.
    scores = [real_logs.score(r, tasks, prior) for r in runs[parts]]
    return float(np.mean(scores))

  chosen = {p: val_score(p) for p in candidates}
  best = max(chosen, key=chosen.get)
  default = real_logs.default_parts(dataset)
  # The baselines see every count input set a candidate derives as well,
  # the better one per task on validation.
  for inputs in sorted(COUNTING):
    if any(inputs in p.split('+') for p in candidates):
      counted = load(config_of(dataset, inputs, 0))
      bl[inputs] = baselines(dataset, inputs, counted, gbdt)
  rows = []
  for t in tasks:
    kind = 'auc' if t.kind != 'regression' else 'rmse'
    positives = negatives = None
    if kind == 'auc':
      split = plain.splits['test']
      row = [i for i, u in enumerate(plain.tasks) if u.name == t.name][0]
      keep = split['mask'][row] > 0
      positives = int(np.sum(split['labels'][row][keep] > 0.5))
      negatives = int(np.sum(keep)) - positives

    def summary(parts, kind=kind, t=t):
      key = f'test/{kind}/{t.name}'
      return stats.summarize([r['test'][key] for r in runs[parts]])

    base = {}
    for name in ('logistic', 'gbdt'):
      options = []
      for inputs, b in bl.items():
        r = b[t.name]
        if name == 'logistic':
          val = r[name]['validation']
        else:
          val = float(np.mean([m['validation'] for m in r[name]['seeds']]))
        test = r[name]['test']
        sign = 1 if kind == 'auc' else -1
        options.append((sign * val, inputs, test))
      _, inputs, test = max(options)
      if kind == 'rmse':
        test = float(np.sqrt(test) * t.label_std)
      base[name] = {'test': test, 'inputs': inputs}

    def beats(parts, kind=kind, base=base, summary=summary):
      mean = summary(parts).mean
      return bool(
        all(
          (mean > b['test']) if kind == 'auc' else (mean < b['test'])
          for b in base.values()
        )
      )

    mine = summary(best)
    if default in runs:
      d = summary(default)
      config_default = dict(parts=default, mean=d.mean, se=d.se)
      config_default['beats_both'] = beats(default)
    else:
      config_default = None
    rows.append(
      dict(
        task=t.name,
        metric=kind,
        test_positives=positives,
        test_negatives=negatives,
        best=dict(parts=best, mean=mine.mean, se=mine.se),
        today=dict(mean=summary('plain').mean, se=summary('plain').se),
        baselines=base,
        beats_both=beats(best),
        default=config_default,
        judged=kind == 'rmse' or positives >= MIN_POSITIVES,
      )
    )
  return dict(candidates=chosen, best=best, tasks=rows)


def _unjudged(beats: bool) -> str:
  return f'({"yes" if beats else "no"}; < {MIN_POSITIVES} positives)'


def auc_sampling_se(auc: float, positives: int, negatives: int) -> float:
  """The standard error of an AUC from the test set's size alone (Hanley
  and McNeil, Radiology 1982, eq. 2): how far two models' test AUCs may lie
  apart by the draw of the test rows."""
  q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
  var = (
    auc * (1 - auc)
    + (positives - 1) * (q1 - auc**2)
    + (negatives - 1) * (q2 - auc**2)
  ) / (positives * negatives)
  return float(np.sqrt(var))


def _sampling(row) -> str:
  if row['metric'] != 'auc' or not row.get('test_negatives'):
    return '-'
  se = auc_sampling_se(
    row['best']['mean'], row['test_positives'], row['test_negatives']
  )
  return f'{se:.4f}'


def _default_line(r) -> str:
  """What the config file's default parts score, where it is not the best."""
  rows = [row for row in r['tasks'] if row.get('default')]
  if not rows or rows[0]['default']['parts'] == r['best']:
    return ''
  parts = rows[0]['default']['parts']
  each = '; '.join(
    f'{row["task"]} {row["default"]["mean"]:.4f} +- {row["default"]["se"]:.4f}'
    f' ({"beats both" if row["default"]["beats_both"] else "**not both**"})'
    for row in rows
  )
  return f"The config file's default `{parts}` on this split: {each}."


def table(record: dict) -> str:
  lines = [
    "Test metrics on each dataset's own split: the best mtl candidate "
    '(chosen on validation), MMoE as the config had it (plain), a '
    'logistic / ridge regression and a GBDT (tuned on validation; inputs: '
    'plain or with counts, chosen on validation). mtl: mean +- SE over '
    'seeds. AUC, or RMSE for regressions (lower is better). Test-set SE: '
    "the AUC's standard error from the test set's size alone (Hanley and "
    'McNeil 1982): differences well inside it are ties on this test set. '
    '`python experiments/real_data.py`.',
    '',
  ]
  for dataset, r in record.items():
    lines.append(f'### {dataset}: best `{r["best"]}`')
    lines.append('')
    header = [
      'task',
      'metric',
      'test positives',
      'test-set SE',
      'mtl best',
      'MMoE plain',
      'logistic',
      'GBDT',
      'beats both',
    ]
    body = []
    for row in r['tasks']:
      b = row['baselines']
      body.append(
        [
          row['task'],
          row['metric'],
          '-' if row['test_positives'] is None else str(row['test_positives']),
          _sampling(row),
          f'{row["best"]["mean"]:.4f} +- {row["best"]["se"]:.4f}',
          f'{row["today"]["mean"]:.4f} +- {row["today"]["se"]:.4f}',
          f'{b["logistic"]["test"]:.4f} ({b["logistic"]["inputs"]})',
          f'{b["gbdt"]["test"]:.4f} ({b["gbdt"]["inputs"]})',
          ('yes' if row['beats_both'] else '**no**')
          if row['judged']
          else _unjudged(row['beats_both']),
        ]
      )
    lines += harness.markdown_table(header, body)
    scores = ', '.join(f'`{p}` {s:.4f}' for p, s in r['candidates'].items())
    lines += ['', f'Validation score per candidate: {scores}.']
    lines += [_default_line(r), '']
  return '\n'.join(lines)


def render() -> None:
  """The tables again from the results file (test-set sizes filled in)."""
  stem = harness.results_stem('real_data', FLAGS.out)
  record = json.loads(stem.with_suffix('.json').read_text())
  record = record.get('record', record)
  for dataset, r in record.items():
    if all(row.get('test_negatives') is not None for row in r['tasks']):
      continue
    plain = load(config_of(dataset, 'plain', 0))
    split = plain.splits['test']
    for row in r['tasks']:
      t = [i for i, u in enumerate(plain.tasks) if u.name == row['task']][0]
      if row['metric'] == 'auc':
        keep = split['mask'][t] > 0
        row['test_negatives'] = int(np.sum(keep)) - row['test_positives']
  harness.write_results('real_data', record, table(record), out=FLAGS.out)


def main(argv):
  del argv
  if _RENDER.value:
    render()
    return
  # Datasets not run this time keep their results from the file.
  stem = harness.results_stem('real_data', FLAGS.out).with_suffix('.json')
  record = json.loads(stem.read_text()) if stem.is_file() else {}
  record = record.get('record', record)
  for dataset in _DATASETS.value:
    record[dataset] = run_dataset(dataset)
    order = [d for d in real_logs.DATASETS if d in record]
    record = {d: record[d] for d in order}
    harness.write_results('real_data', record, table(record), out=FLAGS.out)


if __name__ == '__main__':
  harness.run_main(main)
