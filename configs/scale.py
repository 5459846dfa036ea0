"""The generated scale table (mtl/data/scale.py) through the `table` dataset.

  python -m mtl.data.scale workdirs/scale/scale_1000000 --rows=1000000
  MTL_SCALE_DIR=workdirs/scale mtl-train --config=configs/scale.py:1000000 \\
      --config.input_mode=stream --workdir=workdirs/scale

The argument is 'ROWS' or 'ROWS,MODEL' (default 1000000, mmoe); the files
are $MTL_SCALE_DIR/scale_<ROWS>/{train,validation,test}.parquet, written
beforehand by the generator (its --rows knob: the training rows; then
rows // 100 validation and as many test rows, later in time). Features: user and
item ids (Zipf over 1M each), the item's category, its price (log1p,
standardised) and the user's last 10 items (a 'sequence' pooled with the
item ids' table). Tasks: click (all rows), conversion and watch time (log1p,
standardised) on the clicked rows. Split: by files, i.e. by time (the
generator's validation and test rows come after the training rows). Meant for
`input_mode='stream'` (mtl/data/streaming.py): the training split is never
loaded into memory.
"""

import pathlib

from configs import common

MODELS = common.GENERATED_MODELS


def scale_dir(rows: int, root=None) -> pathlib.Path:
  """Where configs/scale.py:<rows> reads the files: <root>/scale_<rows>/,
  the root $MTL_SCALE_DIR by default."""
  return common.generated_dir('scale', 'MTL_SCALE_DIR', rows, root)


def get_config(arg: str = '1000000'):
  config = common.generated_table_config('scale', 'MTL_SCALE_DIR', arg)
  d = config.dataset
  d.features = {
    'user_id': {'kind': 'categorical'},
    'item_id': {'kind': 'categorical'},
    'category': {'kind': 'categorical'},
    'price': {'kind': 'dense', 'normalize': 'log1p_standard'},
    'history': {
      'kind': 'sequence',
      'max_len': 10,
      'shared_with': 'item_id',
      'pooling': 'mean',
    },
  }
  d.tasks = {
    'click': {'label': 'click'},
    'conversion': {'label': 'conversion', 'where': 'click == 1'},
    'watch_time': {
      'label': 'watch_time',
      'kind': 'regression',
      'where': 'click == 1',
      'transform': 'log1p',
      'scale': 'standard',
    },
  }
  d.task_order = ('click', 'conversion', 'watch_time')
  config.embedding.dim = 16
  config.towers.hidden = (32,)
  config.batch_size = 1024
  config.num_epochs = 1
  config.steps_per_dispatch = 32
  config.eval_batch_size = 8192
  config.log_every_steps = 200
  config.diagnostics_every_steps = 0
  return config
