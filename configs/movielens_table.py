"""MovieLens 100K through the generic `table` dataset: no Python of its own.

  mtl-train --config=configs/movielens_table.py --workdir=workdirs/ml_table

The table is $MTL_DATA_DIR/movielens-100k/u.data alone (tab-separated, no
header: user_id, item_id, rating, timestamp; Harper and Konstan, ACM TiiS
2015). The `table` path reads one file, so the u.user / u.item joins of
the `movielens_100k` dataset are not made here: the features are the user
and item ids and each user's history of previously rated movies (the items
of its ratings strictly earlier in time, the latest 20; see
mtl/data/schema.py), embedded with the item ids' table and mean-pooled.
Tasks: 'like' (rating >= 4, binary; first, so it picks the best epoch) and
'rating' (regression, centred on the training mean). Split: the ratings at
random, 80/10/10, seed 0, as the movielens_100k dataset splits them.
The argument is MODEL[,PART+PART] (configs/common.py PARTS; default mmoe).
The default parts, user_rates+ftrl+per_task+l2 (each user's earlier
ratings and rates, each item's earlier ratings, without its rates; the wide
part trained by FTRL; each task from its own best epoch; L2 1e-4 on the
embedding rows a batch touches), are the combination best on validation on
this split and beat both baselines on a split by time as well, where
'counts' (the items' rates too) is better still (experiments/real_data.py;
docs/real-data.md). 'mmoe,plain' is MMoE alone.
"""

from configs import common

MODELS = {
  'mmoe': dict(num_experts=4, expert_hidden=(64,)),
  'shared_bottom': dict(hidden=(64, 32)),
  'ple': dict(
    num_levels=2,
    num_specific_experts=2,
    num_shared_experts=2,
    expert_hidden=(64,),
  ),
}


# Conditions whose earlier rates the 'counts' part derives per user and item.
COUNTED = ('rating >= 4', 'rating >= 5', 'rating <= 2')
DEFAULT_PARTS = 'user_rates+ftrl+per_task+l2'


def get_config(arg: str = 'mmoe'):
  model_name, parts = common.split_arg(
    arg, 'movielens_table', MODELS, DEFAULT_PARTS
  )
  config = common.base_config(model_name, 'table')
  config.model.update(MODELS[model_name])
  d = config.dataset
  d.name = 'movielens_table'
  d.path = '$MTL_DATA_DIR/movielens-100k/u.data'
  d.file_format = 'tsv'
  d.column_names = ('user_id', 'item_id', 'rating', 'timestamp')
  d.split = 'random'
  d.features = {
    'user_id': {'kind': 'categorical'},
    'item_id': {'kind': 'categorical'},
    'history': {
      'kind': 'history',
      'user': 'user_id',
      'item': 'item_id',
      'time': 'timestamp',
      'max_len': 20,
      'pooling': 'mean',
    },
  }
  d.features.update(
    common.count_features(('user_id', 'item_id'), 'timestamp', COUNTED, parts)
  )
  d.tasks = {
    'like': {'label': 'rating >= 4'},
    'rating': {'label': 'rating', 'kind': 'regression', 'scale': 'center'},
  }
  d.task_order = ('like', 'rating')
  config.embedding.dim = 16
  config.towers.hidden = (32,)
  config.batch_size = 512
  config.num_epochs = 8
  config.steps_per_dispatch = 16
  config.eval_batch_size = 4096
  config.log_every_steps = 50
  common.apply_parts(config, parts, stem='movielens_table')
  return config
