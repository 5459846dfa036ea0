"""Two-tower interactions against MMoE on KuaiRand and MovieLens-100K.

  MTL_DATA_DIR=../shared/data python experiments/two_tower.py \
      [--datasets=kuairand_video,movielens_table] \
      [--models=mmoe,two_tower:bilinear,two_tower:dot,two_tower:mlp,\
two_tower_mmoe] [--seeds=5] [--epochs=0]

kuairand_video: configs/kuairand_video.py:<model> (the KuaiRand slice;
click, long_view, weighted-LR watch time, session goes_on and depth; DIN
history; user tower user id, hour, history, item tower video id,
duration). movielens_table: configs/movielens_table.py (like, centred
rating; mean-pooled history) with the same towers as kuairand_video's
(user tower user id and history, item tower item id; (64, 32) each;
two_tower_mmoe's 4 experts of (64,)). Each model is one population of
--seeds members, each member's epoch chosen on its validation
AUC of the first task. 'two_tower:<interaction>' is two_tower with
model.interaction set (docs/models.md): bilinear and dot end in the bare
per-task form (towers.hidden = ()), mlp in the config's task towers (32,)
over [h, g, h * g], as two_tower_mmoe (the expert bank over the towers'
outputs, mlp interaction). Reported (experiments/ranking_report.py, from
each member's test predictions): AUC and GAUC (by user) of each binary
task, XAUC (by user) of watch time and of each regression, RMSE of each
regression (KuaiRand depth log1p standardised, MovieLens rating centred),
mean +- std over seeds, and the difference to mmoe in standard errors.
Writes experiments/results/two_tower.{json,md} (or --out).
"""

import itertools
import pathlib
import sys

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import kuairand_video, movielens_table  # noqa: E402
from experiments import harness, ranking_report  # noqa: E402

_DATASETS = flags.DEFINE_list(
  'datasets', ['kuairand_video', 'movielens_table'], 'configs/<name>.py.'
)
_MODELS = flags.DEFINE_list(
  'models',
  [
    'mmoe',
    'two_tower:bilinear',
    'two_tower:dot',
    'two_tower:mlp',
    'two_tower_mmoe',
  ],
  'mmoe, two_tower:<interaction> or two_tower_mmoe.',
)
_EPOCHS = flags.DEFINE_integer('epochs', 0, "0: the config's.")
_DATA_DIR = flags.DEFINE_string('data_dir', 'workdirs/tfds', 'TFDS cache.')
harness.define_flags(out='two_tower', workdirs='two_tower', seeds=5)
FLAGS = flags.FLAGS
MLP_TOWERS = (32,)  # kuairand's towers.hidden, as two_tower_mmoe keeps it.


def movielens(name: str):
  """configs/movielens_table.py with kuairand_video's models and towers."""
  config = movielens_table.get_config('mmoe,plain')
  if name == 'mmoe':
    return config
  config.model_name = name
  config.model.num_experts = None
  config.model.expert_hidden = None
  config.model.update(kuairand_video.MODELS[name])
  config.model.user_features = ('user_id', 'history')
  config.model.item_features = ('item_id',)
  config.model.user_hidden = (64, 32)
  config.model.item_hidden = (64, 32)
  if name == 'two_tower':
    config.towers.hidden = ()  # The bilinear form's diagonal and bias.
  return config


def config_of(dataset: str, model: str):
  name, _, interaction = model.partition(':')
  if dataset == 'movielens_table':
    config = movielens(name)
  else:
    config = kuairand_video.get_config(name)
  if interaction:
    config.model.interaction = interaction
    if interaction == 'mlp':
      config.towers.hidden = MLP_TOWERS
  config.dataset.data_dir = _DATA_DIR.value
  config.progress_bar = False
  config.population.seeds = tuple(range(FLAGS.seeds))
  if _EPOCHS.value:
    config.num_epochs = _EPOCHS.value
  return config


def main(argv):
  del argv
  rows = []
  for dataset, model in itertools.product(_DATASETS.value, _MODELS.value):
    config = config_of(dataset, model)
    workdir = pathlib.Path(FLAGS.workdirs) / dataset / model.replace(':', '_')
    rows.append(
      ranking_report.run_row(
        config, workdir, force=FLAGS.force, dataset=dataset, model=model
      )
    )
  harness.write_results('two_tower', rows, table(rows), out=FLAGS.out)


def table(rows) -> str:
  return ranking_report.tables(
    rows,
    'model',
    'mmoe',
    "<dataset>:<model> (experiments/two_tower.py's docstring); test "
    'metrics of each member (its epoch chosen on validation AUC of the '
    'first task), mean +- std over seeds; (z) = difference to mmoe in '
    'standard errors. AUC, GAUC (per-user AUC weighted by rows) of binary '
    'tasks; XAUC (same-user pairs ordered right) of watch time and '
    'regressions; RMSE of regressions (lower is better). '
    '`python experiments/two_tower.py`.',
  )


if __name__ == '__main__':
  harness.run_main(main)
