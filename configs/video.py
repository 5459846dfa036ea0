"""The generated short-video log (mtl/data/video.py): watch time and depth.

  python -m mtl.data.video workdirs/video/video_200000 --rows=200000
  MTL_VIDEO_DIR=workdirs/video mtl-train --config=configs/video.py:200000 \\
      --workdir=workdirs/video

The argument is 'ROWS' or 'ROWS,MODEL' (default 200000, mmoe); the files
are $MTL_VIDEO_DIR/video_<ROWS>/{train,validation,test}.parquet, written
beforehand by the generator (its --rows: the training rows; then rows // 10
validation and as many test rows, later in time). Split: by files, i.e. by
time.

Features: user and video ids, the video's category, its duration (log1p,
standardised) and the user's last 10 videos (a 'sequence' pooled with the
video ids' table). The generator's truth columns (session_id, true_*) are
never read. Tasks, the objectives:
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

import pathlib

from configs import common
from mtl.data import video

# The small log the end-to-end test trains (tests/data/test_video.py) and
# experiments/video_truth.py measures the test's margins on: 500 rows a
# user, so 50,000 training rows suffice to learn each user's interests.
SMALL_LOG = dict(rows=50_000, eval_rows=10_000, num_users=100, num_videos=300)
MODELS = common.GENERATED_MODELS


def video_dir(rows: int, root=None) -> pathlib.Path:
  """Where configs/video.py:<rows> reads the files: <root>/video_<rows>/,
  the root $MTL_VIDEO_DIR by default."""
  return common.generated_dir('video', 'MTL_VIDEO_DIR', rows, root)


def get_config(arg: str = '200000'):
  config = common.generated_table_config('video', 'MTL_VIDEO_DIR', arg)
  d = config.dataset
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
