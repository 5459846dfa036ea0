"""Your own data: a CSV of interactions to a trained model, no Python of yours.

  mtl-train --config=configs/example_table.py --workdir=workdirs/example \
    --config.dataset.path=interactions.csv

The worked example of docs/data.md ("Your own data");
tests/data/test_own_data.py
writes such a file and trains it. The file has a header line and a row per
impression:

  user_id,item_id,ts,price,category,tags,click,buy,dwell_s
  u3,i17,1041,12.5,shoes,red|sale,1,0,35.2

Every column is described below by its kind (mtl/data/schema.py says every
key); the `table` dataset (mtl/data/table.py) prepares the file once
through TFDS (vocabularies and normalisers from the training rows only) and
caches it under --config.dataset.data_dir. Tasks: click on every row, and
buy and dwell time on the clicked rows. Split: each user's last impression
by `ts` is test, the one before validation.
"""

from configs import common


def get_config():
  config = common.base_config('mmoe', 'table')
  d = config.dataset
  d.name = 'example'
  d.path = 'interactions.csv'  # --config.dataset.path=<your file>
  d.split = 'user_last'
  d.user_column = 'user_id'
  d.time_column = 'ts'
  d.features = {
    'user_id': {'kind': 'categorical'},
    'item_id': {'kind': 'categorical', 'min_count': 2},
    'category': {'kind': 'categorical'},
    'price': {
      'kind': 'dense',
      'normalize': 'log1p_standard',
      'missing': 'mean',
      'missing_indicator': True,
    },
    'tags': {'kind': 'sequence', 'delimiter': '|', 'max_len': 4},
    'history': {
      'kind': 'history',
      'user': 'user_id',
      'item': 'item_id',
      'time': 'ts',
      'max_len': 10,
    },
  }
  d.tasks = {
    'click': {'label': 'click'},
    'buy': {'label': 'buy', 'where': 'click == 1'},
    'dwell': {
      'label': 'dwell_s',
      'kind': 'regression',
      'transform': 'log1p',
      'scale': 'standard',
      'where': 'click == 1',
    },
  }
  d.task_order = ('click', 'buy')
  config.model.update(num_experts=2, expert_hidden=(32,))
  config.embedding.dim = 8
  config.towers.hidden = (16,)
  config.batch_size = 64
  config.num_epochs = 4
  config.steps_per_dispatch = 16
  return config
