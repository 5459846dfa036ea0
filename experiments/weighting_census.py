"""Every task-balancing method on one config, several seeds each.

  python experiments/weighting_census.py [--config=configs/census.py:mmoe]
      [--methods=equal,gradnorm,...] [--seeds=5] [--jobs=2]
      [--workdirs=workdirs/weighting] [--out=...]

Each (method, seed) is one single run of the config with
`weighting_name=<method>, seed=<seed>` (the methods' paper defaults of
configs/common.py; model selection on the validation metric of the first
task, as everywhere in mtl), `--jobs` at a time (one Python process each);
runs live in --workdirs/<method>_seed<seed>, and a finished run of the same
config is reused (experiments/harness; --force re-runs), so a rerun
continues. `--config.<key>=<value>` overrides the config for every run: the
conflict synthetic is `--config=configs/synthetic.py:mmoe
--config.dataset.p=0.0` (the MMoE paper's two regression tasks with
orthogonal task vectors).

Reported per method, from results.json and metrics.jsonl:

- each task's test metric (AUC for a classifier, higher is better; MSE for a
  regression, lower is better): mean +- standard error (ddof 1) over seeds;
- its paired difference from equal weighting on the same seeds, in standard
  errors of the differences (|d| < 2 SE: a tie, said so);
- a rough cost: equal weighting's training examples/s over the method's
  (1.00 = as cheap), from runs that shared the cores with others;
  experiments/weighting_speed.py times the step itself;
- where the method puts the weights: each task's share w_t / sum_s w_s of
  the weights the training logged (`train/weight/<task>`), averaged over the
  logged steps and the seeds.

Writes experiments/results/weighting_census.{json,md} (or --out).
"""

import copy
import json
import pathlib
import sys

from absl import flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402
from experiments.harness import stats  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  'config', str(REPO / harness.census_config_path('mmoe')), 'Config file.'
)
_METHODS = flags.DEFINE_list(
  'methods', None, 'Default: equal, then every method but fixed, scheduled.'
)
_JOBS = flags.DEFINE_integer('jobs', 2, 'Runs at once, one process each.')
harness.define_flags(out='weighting_census', workdirs='weighting', seeds=5)
FLAGS = flags.FLAGS

# A tie: the paired difference from equal weighting within 2 standard errors.
TIE_SE = 2.0


def weight_shares(workdir: pathlib.Path, tasks) -> list[float]:
  """Each task's mean share of the logged training weights."""
  shares = [[] for _ in tasks]
  with open(workdir / 'metrics.jsonl') as f:
    for line in f:
      row = json.loads(line)
      w = [row.get(f'train/weight/{t}') for t in tasks]
      if any(v is None for v in w) or not sum(w) > 0:
        continue
      for i, v in enumerate(w):
        shares[i].append(v / sum(w))
  if not shares[0]:
    raise SystemExit(f'{workdir}/metrics.jsonl: no train/weight/<task> rows')
  return [stats.mean(s) for s in shares]


def summarize(methods, runs, workdirs) -> tuple[list, list]:
  """One row per method (see the module doc); the tasks."""
  tasks = runs[methods[0]][0]['tasks']
  base = runs['equal'] if 'equal' in runs else None
  base_speed = base and stats.mean(r['train_examples_per_s'] for r in base)
  rows = []
  for m in methods:
    rs = runs[m]
    row = {'method': m, 'seeds': [r['seed'] for r in rs]}
    ref = [r['test'] for r in base] if base and m != 'equal' else None
    for t in tasks:
      row[t] = stats.metric_cell([r['test'] for r in rs], t, ref, TIE_SE)
    speed = stats.mean(r['train_examples_per_s'] for r in rs)
    row['examples_per_s'] = speed
    row['step_cost'] = base_speed / speed if base_speed else None
    shares = [weight_shares(w, tasks) for w in workdirs[m]]
    row['weight_share'] = [
      stats.mean(s[i] for s in shares) for i in range(len(tasks))
    ]
    row['selected_epochs'] = [r['selected_epoch'] for r in rs]
    rows.append(row)
  return rows, tasks


def markdown(rows, tasks, config_name) -> list[str]:
  first = rows[0][tasks[0]]
  metric = 'AUC' if first['metric'] == 'auc' else 'MSE'
  lines = [
    f'`{config_name}`, seeds {rows[0]["seeds"]} per method: test {metric} '
    'mean +- standard error; in brackets the paired difference from '
    '`equal` on the same seeds and that difference in standard errors '
    f'(a tie: within {TIE_SE:g} SE; over {len(rows) - 1} methods one '
    '"better" or "worse" near 2 SE is expected by chance). ex/s ratio: '
    "`equal`'s training examples/s over the method's, from runs sharing "
    'the cores (a rough cost; experiments/weighting_speed.py times the step '
    "alone). Weight share: each task's w_t / sum w, mean over the logged "
    'training steps and seeds.',
    '',
    *harness.markdown_table(
      ['method', *tasks, 'vs equal', 'ex/s ratio', 'weight share'],
      [
        [
          f'`{r["method"]}`',
          *(stats.cell_text(r[t]) for t in tasks),
          ', '.join(r[t].get('verdict', '-') for t in tasks),
          '-' if r['step_cost'] is None else f'{r["step_cost"]:.2f}x',
          ' / '.join(f'{s:.2f}' for s in r['weight_share']),
        ]
        for r in rows
      ],
      'l' + 'r' * len(tasks) + 'lrr',
    ),
  ]
  for t in tasks:
    counts = {
      v: sum(r[t].get('verdict') == v for r in rows)
      for v in ('better', 'tie', 'worse')
    }
    lines += [
      '',
      f'{t}: {counts["better"]} methods better than `equal`, '
      f'{counts["tie"]} tie, {counts["worse"]} worse (of {len(rows) - 1}).',
    ]
  return lines


def main(argv):
  del argv
  from mtl.core.weighting import WEIGHTINGS

  methods = _METHODS.value or ['equal'] + sorted(
    set(WEIGHTINGS) - {'equal', 'fixed', 'scheduled'}
  )
  config_name = config_flags.get_config_filename(FLAGS['config'])
  try:  # As the command line named it: relative to the repository.
    config_name = str(pathlib.Path(config_name).relative_to(REPO))
  except ValueError:
    pass
  root = pathlib.Path(FLAGS.workdirs)
  keys = [(m, s) for m in methods for s in range(FLAGS.seeds)]
  jobs = []
  for m, s in keys:
    config = copy.deepcopy(_CONFIG.value)
    config.weighting_name = m
    config.seed = s
    config.progress_bar = False
    jobs.append((config, root / f'{m}_seed{s}'))
  done = harness.run_all(jobs, processes=_JOBS.value, force=FLAGS.force)
  runs, workdirs = {}, {}
  for (m, s), r, (_, w) in zip(keys, done, jobs, strict=True):
    runs.setdefault(m, []).append(r)
    workdirs.setdefault(m, []).append(w)
    print(m, s, r['test'], flush=True)
  rows, tasks = summarize(methods, runs, workdirs)
  harness.write_results(
    'weighting_census',
    {'config': config_name, 'tasks': list(tasks), 'rows': rows},
    markdown(rows, tasks, config_name),
    out=FLAGS.out,
  )


if __name__ == '__main__':
  harness.run_main(main)
