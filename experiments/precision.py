"""Census-income test AUCs at each precision, 5 seeds (docs/scaling.md).

  OMP_NUM_THREADS=1 python experiments/precision.py [--seeds=5] [--jobs=1]

Three variants of configs/census.py:mmoe (the paper's setup), each run for
seeds 0..N-1: 'float32' (the default program), 'bfloat16'
(config.precision: backbone and towers computed in bfloat16) and
'bfloat16+emb' (also config.embedding.dtype='bfloat16': the embedding
tables stored in bfloat16; mtl/core/precision.py). Runs are ordered seed by
seed, so an interrupted sweep has whole seeds; they live in
--workdirs/<variant>_seed<seed> (workdirs/precision), and a finished run of
the same config is reused (experiments/harness; --force re-runs).
`--config.<key>=<value>` overrides the config for every run. Writes
experiments/results/precision.{json,md} (or --out): mean +- std (ddof 0) of
the test AUCs per task, the largest paired difference from float32, and
the mean training examples/s.
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
_JOBS = flags.DEFINE_integer('jobs', 1, 'Runs at once, one process each.')
harness.define_flags(out='precision', workdirs='precision', seeds=5)
FLAGS = flags.FLAGS

# variant -> (config.precision, config.embedding.dtype)
VARIANTS = {
  'float32': ('float32', 'float32'),
  'bfloat16': ('bfloat16', 'float32'),
  'bfloat16+emb': ('bfloat16', 'bfloat16'),
}


def _jobs(root: pathlib.Path):
  keys, jobs = [], []
  for s in range(FLAGS.seeds):
    for v, (compute, stored) in VARIANTS.items():
      config = copy.deepcopy(_CONFIG.value)
      config.precision = compute
      config.embedding.dtype = stored
      config.seed = s
      config.progress_bar = False
      keys.append((v, s))
      jobs.append((config, root / f'{v}_seed{s}'))
  return keys, jobs


def _row(variant, rs, base, tasks) -> dict:
  row = {'variant': variant, 'seeds': len(rs)}
  for t in tasks:
    aucs = [r['test'][f'test/auc/{t}'] for r in rs]
    row[t] = stats.mean_std(aucs, ddof=0)
    ref = [r['test'][f'test/auc/{t}'] for r in base]
    diffs = [a - b for a, b in zip(aucs, ref, strict=True)]
    row[f'{t}_max_paired_diff'] = max(abs(d) for d in diffs)
    # mean +- SD (ddof 1) of the paired differences: what a test's tolerance
    # of one seed's difference is derived from.
    row[f'{t}_paired_diff'] = stats.mean_std(diffs) if len(diffs) > 1 else None
  row['examples_per_s'] = stats.mean(r['train_examples_per_s'] for r in rs)
  row['selected_epochs'] = [r['selected_epoch'] for r in rs]
  return row


def _paired(diff) -> str:
  return '-' if diff is None else f'{diff[0]:+.6f} +- {diff[1]:.6f}'


def main(argv):
  del argv
  keys, jobs = _jobs(pathlib.Path(FLAGS.workdirs))
  runs = harness.run_all(jobs, processes=_JOBS.value, force=FLAGS.force)
  results = {}
  for (v, s), r in zip(keys, runs, strict=True):
    results.setdefault(v, []).append(r)
    print(v, s, r['test'], flush=True)
  tasks = results['float32'][0]['tasks']
  rows = [_row(v, results[v], results['float32'], tasks) for v in VARIANTS]
  config_name = config_flags.get_config_filename(FLAGS['config'])
  try:  # As the command line named it: relative to the repository.
    config_name = str(pathlib.Path(config_name).relative_to(REPO))
  except ValueError:
    pass
  lines = [
    f"`{config_name}` (and the command line's overrides, below), seeds "
    f'0-{FLAGS.seeds - 1} (`python experiments/precision.py`): test AUC '
    'mean +- std (ddof 0); max |diff|: the largest paired (same seed) '
    "difference from float32; paired: the paired differences' mean +- "
    'SD (ddof 1).',
    '',
    *harness.markdown_table(
      [
        'variant',
        *tasks,
        *(f'{t} max abs diff' for t in tasks),
        *(f'{t} paired' for t in tasks),
        'examples/s',
      ],
      [
        [
          f'`{row["variant"]}`',
          *(f'{row[t][0]:.5f} +- {row[t][1]:.5f}' for t in tasks),
          *(f'{row[f"{t}_max_paired_diff"]:.5f}' for t in tasks),
          *(_paired(row[f'{t}_paired_diff']) for t in tasks),
          f'{row["examples_per_s"]:,.0f}',
        ]
        for row in rows
      ],
      'l' + 'r' * (3 * len(tasks) + 1),
    ),
  ]
  harness.write_results(
    'precision',
    {
      'config': config_name,
      'variants': VARIANTS,
      'seeds': FLAGS.seeds,
      'rows': rows,
    },
    lines,
    out=FLAGS.out,
  )


if __name__ == '__main__':
  harness.run_main(main)
