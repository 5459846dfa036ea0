"""The generated short-video log (mtl/data/video.py): watch time and depth.

  python -m mtl.data.video /tmp/video/video_200000 --rows=200000
  MTL_VIDEO_DIR=/tmp/video mtl-train --config=configs/video.py:200000 \\
      --workdir=workdirs/video

The argument is 'ROWS' or 'ROWS,MODEL' (default 200000, mmoe); the files
are $MTL_VIDEO_DIR/video_<ROWS>/{train,validation,test}.parquet, written
beforehand by the generator (its --rows: the training rows; then rows // 10
validation and as many test rows, later in time). Split: by files, i.e. by
time.

Features: user and video ids, the video's category, its duration (log1p,
standardised) and the user's last 10 videos (a 'sequence' pooled with the
video ids' table). The generator's truth columns (session_id, true_*) are
never read. Tasks, the objectives of issue 15:
- continues: the schema's session label (kind 'session', gap
  video.SESSION_GAP seconds): 1 if the user goes on after this video in its
  session; first, so its validation AUC picks the best epoch;
- watch_time: regression on log1p(watch_time), standardised with the
  training moments (every impression is watched for some time, so the
  weighted logistic task of configs/kuairand_video.py, which needs
  unwatched negatives, does not fit).
MMoE (4 experts of 64), embeddings of 16, 4 epochs of batch 512 at
learning rate 5e-3 (cosine): about 20 s on a 2-core CPU at 200,000 rows.
Its test metrics against the oracles': docs/video.md.
"""

import os
import pathlib

from configs import common
from mtl.data import video
from mtl.errors import ConfigError

# The small log the end-to-end test trains (tests/data/test_video.py) and
# experiments/video_truth.py measures the test's margins on: 500 rows a
# user, so 50,000 training rows suffice to learn each user's interests.
SMALL_LOG = dict(rows=50_000, eval_rows=10_000, num_users=100, num_videos=300)
MODELS = {
  'mmoe': dict(num_experts=4, expert_hidden=(64,)),
  'shared_bottom': dict(hidden=(64, 32)),
}


def video_dir(rows: int, root=None) -> pathlib.Path:
  """Where configs/video.py:<rows> reads the files: <root>/video_<rows>/,
  the root $MTL_VIDEO_DIR by default."""
  root = root or os.environ.get('MTL_VIDEO_DIR', '$MTL_VIDEO_DIR')
  return pathlib.Path(root) / f'video_{rows}'


def get_config(arg: str = '200000'):
  rows, _, model_name = str(arg).partition(',')
  model_name = model_name or 'mmoe'
  if not rows.isdigit() or model_name not in MODELS:
    raise ConfigError(
      f'configs/video.py: argument {arg!r}, expected ROWS[,MODEL] with MODEL '
      f'one of {sorted(MODELS)}'
    )
  config = common.base_config(model_name, 'table')
  config.model.update(MODELS[model_name])
  d = config.dataset
  d.name = 'video'
  folder = f'$MTL_VIDEO_DIR/video_{int(rows)}'
  d.path = f'{folder}/train.parquet'
  d.validation_path = f'{folder}/validation.parquet'
  d.test_path = f'{folder}/test.parquet'
  d.split = 'files'
  d.features = {
    'user_id': {'kind': 'categorical'},
    'video_id': {'kind': 'categorical'},
    'category': {'kind': 'categorical'},
    'duration': {'kind': 'dense', 'normalize': 'log1p_standard'},
    'history': {
      'kind': 'sequence',
      'max_len': 10,
      'shared_with': 'video_id',
      'pooling': 'mean',
    },
    'session': {
      'kind': 'session',
      'user': 'user_id',
      'time': 'time',
      'gap': video.SESSION_GAP,
    },
  }
  d.tasks = {
    'continues': {'label': 'session.continues'},
    'watch_time': {
      'label': 'watch_time',
      'kind': 'regression',
      'transform': 'log1p',
      'scale': 'standard',
    },
  }
  d.task_order = ('continues', 'watch_time')
  config.embedding.dim = 16
  config.towers.hidden = (32,)
  config.optimizer.learning_rate = 5e-3
  config.batch_size = 512
  config.num_epochs = 4
  config.steps_per_dispatch = 32
  config.eval_batch_size = 8192
  config.log_every_steps = 100
  config.diagnostics_every_steps = 0
  return config
