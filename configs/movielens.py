"""MovieLens 100K with its user and item side features (`movielens_100k`).

  mtl-train --config=configs/movielens.py --workdir=workdirs/movielens

The `movielens_100k` dataset joins u.data with u.user and u.item and
prepares the joined file through the generic `table` path
(mtl/data/movielens.py): user and item ids, age bucket, gender, occupation,
zip prefix, 19 genre flags and release year; tasks rating (centred, first)
and like (rating >= 4); ratings split at random 80/10/10, seed 0.
`--config.dataset.history_len=20` adds each user's previously rated
movies. Model and training are configs/movielens_table.py's (ids and
history only, from u.data alone); docs/data.md compares the two. The
argument picks the model (default mmoe).
"""

from configs import common, movielens_table


def get_config(model_name: str = 'mmoe'):
  if model_name not in movielens_table.MODELS:
    raise ValueError(
      f'configs/movielens.py: model {model_name!r} is not one of '
      f'{sorted(movielens_table.MODELS)}'
    )
  config = common.base_config(model_name, 'movielens_100k')
  config.model.update(movielens_table.MODELS[model_name])
  config.embedding.dim = 16
  config.towers.hidden = (32,)
  config.batch_size = 512
  config.num_epochs = 8
  config.steps_per_dispatch = 16
  config.eval_batch_size = 4096
  config.log_every_steps = 50
  return config
