"""MovieLens 100K with its user and item side features, through the generic
`table` dataset: this file is the whole description.

  mtl-train --config=configs/movielens.py --workdir=workdirs/movielens
  mtl-train --config=configs/movielens.py:mmoe,20 --workdir=workdirs/ml_h20

GroupLens MovieLens 100K (Harper and Konstan, ACM TiiS 2015; research use,
no redistribution) in $MTL_DATA_DIR/movielens-100k, checked against its
sha256 sums: the ratings u.data (tab-separated, no header) joined by user
with u.user and by item with u.item ('|'-separated, latin-1). Features:
user and item ids, age (standardised), gender, occupation, zip prefix (the
zip code's first character), the 19 genre flags (0/1) and release year
(standardised; the item without a date gets the mean); with a second
argument N, each user's history of previously rated movies (the latest N).
Tasks: rating (regression, centred on the training mean; first) and like
(rating >= 4). Ratings split at random 80/10/10, seed 0. Model and training
are configs/movielens_table.py's (ids and history only, from u.data
alone); docs/data.md compares the two. The argument is 'MODEL[,N]'
(default mmoe, no history).
"""

from configs import common, movielens_table

GENRES = tuple(
  "unknown Action Adventure Animation Children's Comedy Crime Documentary "
  'Drama Fantasy Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War '
  'Western'.split()
)
URL = 'https://files.grouplens.org/datasets/movielens/ml-100k/'
SHA256 = {
  'u.data': '06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490',
  'u.user': 'f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c',
  'u.item': '553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701',
}


def get_config(arg: str = 'mmoe'):
  model_name, _, history = str(arg).partition(',')
  if model_name not in movielens_table.MODELS or not (
    history == '' or history.isdigit()
  ):
    raise ValueError(
      f'configs/movielens.py: argument {arg!r}, expected MODEL[,N] with '
      f'MODEL one of {sorted(movielens_table.MODELS)}'
    )
  config = common.base_config(model_name, 'table')
  config.model.update(movielens_table.MODELS[model_name])
  d = config.dataset
  d.name = 'movielens_100k'
  d.manual_dir = '$MTL_DATA_DIR/movielens-100k'
  d.path = 'u.data'
  d.file_format = 'tsv'
  d.column_names = ('user_id', 'item_id', 'rating', 'timestamp')
  d.sha256 = {'path': SHA256['u.data']}
  d.source = (
    f'download u.data, u.user and u.item from {URL} (or unzip ml-100k.zip '
    'there; GroupLens terms: research use, no redistribution)'
  )
  side = dict(file_format='csv', delimiter='|')
  d.joins = {
    'user': dict(
      side,
      path='u.user',
      on='user_id',
      column_names=('user_id', 'age', 'gender', 'occupation', 'zip'),
      sha256=SHA256['u.user'],
    ),
    'item': dict(
      side,
      path='u.item',
      on='item_id',
      column_names=('item_id', 'title', 'release', 'video', 'url')
      + tuple(f'genre_{g}' for g in GENRES),
      encoding='latin-1',
      sha256=SHA256['u.item'],
    ),
  }
  features = {
    'user_id': {'kind': 'categorical'},
    'item_id': {'kind': 'categorical'},
    'age': {'kind': 'dense'},
    'gender': {'kind': 'categorical'},
    'occupation': {'kind': 'categorical'},
    'zip_prefix': {'kind': 'categorical', 'column': 'zip', 'extract': '^(.)'},
    **{f'genre_{g}': {'kind': 'dense', 'normalize': 'none'} for g in GENRES},
    'release_year': {
      'kind': 'dense',
      'column': 'release',
      'extract': r'(\d{4})$',
      'missing': 'mean',
    },
  }
  if history:
    features['history'] = {
      'kind': 'history',
      'user': 'user_id',
      'item': 'item_id',
      'time': 'timestamp',
      'max_len': int(history),
    }
  d.features = features
  d.tasks = {
    'rating': {'label': 'rating', 'kind': 'regression', 'scale': 'center'},
    'like': {'label': 'rating >= 4'},
  }
  d.task_order = ('rating', 'like')
  config.embedding.dim = 16
  config.towers.hidden = (32,)
  config.batch_size = 512
  config.num_epochs = 8
  config.steps_per_dispatch = 16
  config.eval_batch_size = 4096
  config.log_every_steps = 50
  return config
