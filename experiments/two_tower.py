"""Two towers against MMoE on KuaiRand's video objectives (issue 15.5).

  MTL_DATA_DIR=../shared/data python experiments/two_tower.py \
      [--models=mmoe,two_tower,two_tower_mmoe] [--seeds=5] [--epochs=0]

configs/kuairand_video.py:<model> (click, long_view, weighted-LR watch
time, session goes_on and depth; DIN history): each model one population
of --seeds members, epoch chosen on validation click AUC. Reported per
task: test AUC (binary, weighted_logistic) or MSE (depth), mean +- std
over seeds, and the difference to mmoe in standard errors. Writes
experiments/results/two_tower.{json,md} (or --out).
"""

import pathlib
import sys

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import kuairand_video  # noqa: E402
from experiments import harness  # noqa: E402
from experiments.harness import stats  # noqa: E402

_MODELS = flags.DEFINE_list(
  'models', ['mmoe', 'two_tower', 'two_tower_mmoe'], 'kuairand_video models.'
)
_EPOCHS = flags.DEFINE_integer('epochs', 0, "0: the config's.")
_DATA_DIR = flags.DEFINE_string('data_dir', '/tmp/mtl_tfds', 'TFDS cache.')
harness.define_flags(out='two_tower', workdirs='two_tower', seeds=5)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  rows = []
  for model in _MODELS.value:
    config = kuairand_video.get_config(model)
    config.dataset.data_dir = _DATA_DIR.value
    config.progress_bar = False
    config.population.seeds = tuple(range(FLAGS.seeds))
    if _EPOCHS.value:
      config.num_epochs = _EPOCHS.value
    workdir = pathlib.Path(FLAGS.workdirs) / model
    members = harness.run(config, workdir, force=FLAGS.force)['members']
    metrics = {}
    for key in members[0]['test']:
      if key.startswith(('test/auc/', 'test/mse/')):
        metrics[key.removeprefix('test/')] = [m['test'][key] for m in members]
    rows.append({'model': model, 'seeds': len(members), 'test': metrics})
    m, s = stats.mean_std(metrics['auc/click'])
    print(f'{model:16s} auc/click {m:.4f} +- {s:.4f}', flush=True)
  harness.write_results('two_tower', rows, table(rows), out=FLAGS.out)


def table(rows) -> str:
  keys = list(rows[0]['test'])
  base = next((r for r in rows if r['model'] == 'mmoe'), None)
  lines = [
    'configs/kuairand_video.py:<model>; test metrics, mean +- std over '
    'seeds; (z) = difference to mmoe in standard errors. '
    '`python experiments/two_tower.py`.',
    '',
    '| model | n | ' + ' | '.join(keys) + ' |',
    '|---|---:|' + '---:|' * len(keys),
  ]
  for r in rows:
    cells = []
    for k in keys:
      m, s = stats.mean_std(r['test'][k])
      cell = f'{m:.4f} +- {s:.4f}'
      if base is not None and r is not base:
        _, z = stats.diff_in_se(r['test'][k], base['test'][k])
        cell += f' ({z:+.1f})'
      cells.append(cell)
    lines.append(f'| {r["model"]} | {r["seeds"]} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


if __name__ == '__main__':
  harness.run_main(main)
