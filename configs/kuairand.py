"""KuaiRand short-video feedback through the generic `table` dataset.

  mtl-train --config=configs/kuairand.py --workdir=workdirs/kuairand
  mtl-train --config=configs/kuairand.py:mmoe,plain --workdir=...  # MMoE alone

The argument is MODEL[,PART+PART] (configs/common.py PARTS). The default,
counts+ftrl+per_task+rare+l2+long, is the combination best on validation
(experiments/real_data.py; docs/real-data.md): count features of the user
and the video (their earlier impressions and rates of the five binary
labels), the wide part trained by FTRL, each task from its own best epoch,
positive weight 10 on comment and follow, L2 1e-4 on touched embedding rows
and 12 epochs.

The table is $MTL_DATA_DIR/kuairand-feedback-slice/kuairand_feedback_slice
.tsv.gz (KuaiRand-27K, Gao et al., CIKM 2022; CC BY-SA 4.0). It is a BIASED
slice (shared/data/README.md section 7): only impressions that got explicit
feedback (a like or a hate), so clicks (66 %), long views and play times
are far above a real feed's and `label` is like (1) vs hate (0). Numbers on
it say how well a model separates behaviour within that slice, not what a
feed would see.

Tasks: click (is_click; first: with 'plain' it picks the best epoch), long_view,
like (label), comment (is_comment), follow (is_follow) and play_time
(play_time_ms, log1p then standardised with the training moments: its MSE
is in units of that variance). Features: user and video ids, the video's
duration (log1p, standardised; the file's 0 for an unknown duration, 18.5 %
of rows, is kept as 0), the hour of day (hourmin, hhmm on the hour,
standardised) and each user's history of earlier videos (strictly earlier
time_ms, the latest 20, pooled with the video ids' table). Post-impression
columns (forward, profile enter, comment stay time) are not inputs. Split:
by time, the latest 10 % of impressions test and the 10 % before
validation.

Read the results (docs/data.md) with two properties of the slice in mind:
63 % of test rows (48 % of validation rows) have a video unseen in
training, whose id gets the never-trained out-of-vocabulary embedding; and
the slice's 15-core filter on liked impressions makes a video's frequency
nearly decide `like` (videos seen at most twice are all hates, those seen
six times or more 99 % likes), so like AUC measures that selection as much
as taste.
"""

from configs import common

MODELS = {
  'mmoe': dict(num_experts=6, expert_hidden=(64,)),
  'shared_bottom': dict(hidden=(64, 32)),
  'ple': dict(
    num_levels=2,
    num_specific_experts=2,
    num_shared_experts=2,
    expert_hidden=(64,),
  ),
}


# Labels whose earlier rates the 'counts' part derives per user and video.
COUNTED = ('is_click', 'long_view', 'label', 'is_comment', 'is_follow')
DEFAULT_PARTS = 'counts+ftrl+per_task+rare+l2+long'
# Under 1 % positives: positive weight 10 with the 'rare' part.
RARE = ('comment', 'follow')
# Per-task loss weights (click, long_view, like, comment, follow, play_time)
# for the 'weights' part: experiments/loss_weight_search.py's best on
# validation (model seed 0, 24 candidates: validation score 0.7471 against
# equal weights' 0.7464).
TASK_WEIGHTS = (0.3612, 1.918, 0.7413, 0.5348, 1.3138, 1.1308)


def get_config(arg: str = 'mmoe'):
  model_name, parts = common.split_arg(arg, 'kuairand', MODELS, DEFAULT_PARTS)
  config = common.base_config(model_name, 'table')
  config.model.update(MODELS[model_name])
  d = config.dataset
  d.name = 'kuairand'
  d.path = (
    '$MTL_DATA_DIR/kuairand-feedback-slice/kuairand_feedback_slice.tsv.gz'
  )
  d.split = 'time'
  d.time_column = 'time_ms'
  d.features = {
    'user_id': {'kind': 'categorical'},
    'video_id': {'kind': 'categorical'},
    'duration_ms': {'kind': 'dense', 'normalize': 'log1p_standard'},
    'hourmin': {'kind': 'dense', 'normalize': 'standard'},
    'history': {
      'kind': 'history',
      'user': 'user_id',
      'item': 'video_id',
      'time': 'time_ms',
      'max_len': 20,
    },
  }
  d.features.update(
    common.count_features(('user_id', 'video_id'), 'time_ms', COUNTED, parts)
  )
  d.tasks = {
    'click': {'label': 'is_click'},
    'long_view': {'label': 'long_view'},
    'like': {'label': 'label'},
    'comment': {'label': 'is_comment'},
    'follow': {'label': 'is_follow'},
    'play_time': {
      'label': 'play_time_ms',
      'kind': 'regression',
      'transform': 'log1p',
      'scale': 'standard',
    },
  }
  d.task_order = ('click', 'long_view', 'like', 'comment', 'follow')
  config.embedding.dim = 16
  config.towers.hidden = (32,)
  config.batch_size = 512
  config.num_epochs = 8
  config.steps_per_dispatch = 16
  config.eval_batch_size = 4096
  config.log_every_steps = 50
  common.apply_parts(
    config, parts, rare=RARE, weights=TASK_WEIGHTS, stem='kuairand'
  )
  return config
