"""Census-income test AUCs of every task-balancing method, a few seeds each.

  python experiments/weighting_census.py [--config=configs/census_mmoe.py]
      [--methods=equal,gradnorm,...] [--seeds=3] [--jobs=2]

Each (method, seed) is one single run of the config with
`weighting_name=<method>, seed=<seed>` (default hyper-parameters of
configs/common.py; model selection on the validation AUC of the first task,
as everywhere in mtl), `--jobs` at a time (one Python process each); runs
live in --workdirs/<method>_seed<seed>, and a finished run of the same
config is reused (experiments/harness; --force re-runs), so a rerun
continues. `--config.<key>=<value>` overrides the config for every run.
Writes experiments/results/weighting_census.{json,md} (or --out): mean +-
std (ddof 0) of the test AUCs per task, and the mean training examples/s.
"""

import copy
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
harness.define_flags(out='weighting_census', workdirs='weighting', seeds=3)
FLAGS = flags.FLAGS


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
  runs = harness.run_all(jobs, processes=_JOBS.value, force=FLAGS.force)
  results = {}
  for (m, s), r in zip(keys, runs, strict=True):
    results.setdefault(m, []).append(r)
    print(m, s, r['test'], flush=True)
  rows = []
  for m in methods:
    rs = results[m]
    tasks = rs[0]['tasks']
    row = {'method': m, 'seeds': len(rs), 'selected_epochs': []}
    for t in tasks:
      row[t] = stats.mean_std([r['test'][f'test/auc/{t}'] for r in rs], ddof=0)
    row['examples_per_s'] = stats.mean(r['train_examples_per_s'] for r in rs)
    row['selected_epochs'] = [r['selected_epoch'] for r in rs]
    rows.append(row)
  tasks = results[methods[0]][0]['tasks']
  lines = [
    f'Census-income, `{config_name}`, {FLAGS.seeds} seeds per method '
    f'(`python experiments/weighting_census.py`): test AUC mean +- std.',
    '',
    *harness.markdown_table(
      ['method', *tasks, 'examples/s'],
      [
        [
          f'`{row["method"]}`',
          *(f'{row[t][0]:.4f} +- {row[t][1]:.4f}' for t in tasks),
          f'{row["examples_per_s"]:,.0f}',
        ]
        for row in rows
      ],
      'l' + 'r' * (len(tasks) + 1),
    ),
  ]
  harness.write_results(
    'weighting_census',
    {'config': config_name, 'rows': rows},
    lines,
    out=FLAGS.out,
  )


if __name__ == '__main__':
  harness.run_main(main)
