"""The generated multi-scenario log (mtl/data/scenarios.py): click and like.

  python -m mtl.data.scenarios workdirs/scenarios/scenarios_500000 --rows=500000
  MTL_SCENARIOS_DIR=workdirs/scenarios mtl-train \\
      --config=configs/scenarios.py:500000 --workdir=workdirs/scenarios

The argument is 'ROWS' or 'ROWS,MODEL' (default 500000, mmoe); the file is
$MTL_SCENARIOS_DIR/scenarios_<ROWS>/log.tsv.gz, written beforehand by the
generator (its --rows: all the rows). Split by time: the last tenth of the
rows test, the tenth before validation.

Features: user and item ids, the item's category, the scenario, and the
priors the generator's probabilities depend on: the user's activity level
(categorical) and the item's popularity (dense, standardised). The truth
columns (true_click, true_like) are never read. Tasks: click first (its
validation AUC picks the best epoch), then like; both on every impression.
MMoE (4 experts of 64), embeddings of 16, 4 epochs of batch 1024 at
learning rate 0.03 (cosine): 32 s on a 2-core CPU at 500,000 rows, test
AUC 0.012 (click) and 0.014 (like) below the oracle's (scenarios.oracle_aucs,
the true probabilities' AUC; experiments/scenarios_truth.py).
"""

import pathlib

from configs import common

# The small log of tests/data/test_scenarios.py's end-to-end run: 100 users, so
# 60,000 rows hold about 600 a user.
SMALL_LOG = dict(rows=60_000, num_users=100, num_items=300, num_categories=10)
MODELS = common.GENERATED_MODELS


def scenarios_dir(rows: int, root=None) -> pathlib.Path:
  """Where configs/scenarios.py:<rows> reads log.tsv.gz: the folder
  <root>/scenarios_<rows>/, the root $MTL_SCENARIOS_DIR by default."""
  return common.generated_dir('scenarios', 'MTL_SCENARIOS_DIR', rows, root)


def get_config(arg: str = '500000'):
  config = common.generated_table_config('scenarios', 'MTL_SCENARIOS_DIR', arg)
  d = config.dataset
  d.path = d.path.replace('train.parquet', 'log.tsv.gz')
  d.validation_path = None
  d.test_path = None
  d.split = 'time'
  d.time_column = 'time'
  d.features = {
    'user_id': {'kind': 'categorical'},
    'item_id': {'kind': 'categorical'},
    'category': {'kind': 'categorical'},
    'scenario': {'kind': 'categorical'},
    'user_activity': {'kind': 'categorical'},
    'item_popularity': {'kind': 'dense'},
  }
  d.tasks = {'click': {'label': 'click'}, 'like': {'label': 'like'}}
  d.task_order = ('click', 'like')
  config.embedding.dim = 16
  config.towers.hidden = (32,)
  config.optimizer.learning_rate = 0.03
  config.batch_size = 1024
  config.num_epochs = 4
  config.steps_per_dispatch = 32
  config.eval_batch_size = 8192
  config.log_every_steps = 100
  config.diagnostics_every_steps = 0
  return config
