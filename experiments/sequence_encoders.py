"""History encoders under MMoE on the `table` configs.

  MTL_DATA_DIR=../shared/data python experiments/sequence_encoders.py \
      [--datasets=movielens_table,kuairand] \
      [--encoders=none,mean,din,gru,transformer] [--seeds=5] [--epochs=0]

For configs/movielens_table.py (MovieLens-100K u.data, ratings at random
80/10/10) and configs/kuairand.py (the biased KuaiRand feedback slice, by
time), the MMoE config is run with the behaviour history dropped ('none')
or pooled by each encoder of mtl.core.layers.embedding.SEQUENCE_ENCODERS
('mean'; 'din', Zhou et al. KDD 2018; 'gru'; 'transformer', SASRec, Kang
and McAuley ICDM 2018), everything else the config's. Each variant is one
population of --seeds members (seeds 0..n-1, the config's learning rate);
every member picks its epoch on its own validation AUC of the first task.
Reported (experiments/ranking_report.py, from each member's test
predictions): AUC and GAUC (by user) of each binary task, XAUC (by user)
and RMSE of each regression (MovieLens rating, centred; KuaiRand log1p
play time, standardised), mean +- std over seeds, and the difference to
'mean' in standard errors. Prepared data lives under
--data_dir (default workdirs/tfds). Writes
experiments/results/sequence_encoders.{json,md} (or --out).
"""

import importlib
import pathlib
import sys

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness, ranking_report  # noqa: E402

_DATASETS = flags.DEFINE_list(
  'datasets', ['movielens_table', 'kuairand'], 'configs/<name>.py (mmoe).'
)
_ENCODERS = flags.DEFINE_list(
  'encoders', ['none', 'mean', 'din', 'gru', 'transformer'], 'History.'
)
_EPOCHS = flags.DEFINE_integer('epochs', 0, "0: the config's.")
_DATA_DIR = flags.DEFINE_string('data_dir', 'workdirs/tfds', 'TFDS cache.')
harness.define_flags(
  out='sequence_encoders', workdirs='sequence_encoders', seeds=5
)
FLAGS = flags.FLAGS


def config_of(dataset: str, encoder: str, seeds: int):
  config = importlib.import_module(f'configs.{dataset}').get_config(
    'mmoe,plain'
  )
  features = config.dataset.features.to_dict()
  if encoder == 'none':
    del features['history']
  else:
    features['history']['pooling'] = encoder
  config.dataset.features = features
  config.dataset.data_dir = _DATA_DIR.value
  config.progress_bar = False
  config.population.seeds = tuple(range(seeds))
  if _EPOCHS.value:
    config.num_epochs = _EPOCHS.value
  return config


def main(argv):
  del argv
  rows = []
  for dataset in _DATASETS.value:
    for encoder in _ENCODERS.value:
      config = config_of(dataset, encoder, FLAGS.seeds)
      workdir = pathlib.Path(FLAGS.workdirs) / dataset / encoder
      rows.append(
        ranking_report.run_row(
          config, workdir, force=FLAGS.force, dataset=dataset, encoder=encoder
        )
      )
  harness.write_results('sequence_encoders', rows, table(rows), out=FLAGS.out)


def table(rows) -> str:
  return ranking_report.tables(
    rows,
    'encoder',
    'mean',
    'MMoE with the history dropped (none) or encoded by each sequence '
    'encoder; test metrics of each member (its epoch chosen on validation), '
    'mean +- std over seeds; (z) = difference to mean pooling in standard '
    'errors. AUC, GAUC (per-user AUC weighted by rows) of binary tasks; '
    'XAUC (same-user pairs ordered right) and RMSE (lower is better) of '
    'regressions. `python experiments/sequence_encoders.py`.',
  )


if __name__ == '__main__':
  harness.run_main(main)
