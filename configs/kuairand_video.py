"""KuaiRand's short-video objectives: watch time, long view and depth.

  mtl-train --config=configs/kuairand_video.py --workdir=workdirs/kr_video
  mtl-train --config=configs/kuairand_video.py:two_tower \\
      --workdir=workdirs/kr_video_tt

The KuaiRand feedback slice as configs/kuairand.py reads it (its caveats
hold: a biased slice of liked or hated impressions), with the video
objectives as tasks:
- click (is_click; first, so it picks the best epoch) and long_view (the
  slice's long-view flag, KuaiRand's play-ratio-based label);
- watch: YouTube's weighted logistic regression on play_time_ms
  (Covington et al., RecSys 2016): exp(logit) estimates the expected play
  time in ms; weight 1e-4 brings its ms-weighted loss near the others';
- goes_on and depth: from sessions (a user's impressions with gaps of at
  most 30 minutes; mtl/data/schema.py kind 'session'), whether the user
  goes on after this video in its session (binary) and how many videos of
  the session follow (regression, log1p then standardised).
The history is encoded by DIN against the candidate video. The argument
picks the model: mmoe (default), two_tower or two_tower_mmoe (user tower:
user id, hour, history; item tower: video id, duration).
"""

from configs import kuairand

SESSION_GAP_MS = 30 * 60 * 1000
MODELS = {
  'mmoe': dict(num_experts=6, expert_hidden=(64,)),
  'two_tower': dict(interaction='bilinear'),
  'two_tower_mmoe': dict(interaction='mlp', num_experts=4, expert_hidden=(64,)),
}
USER = ('user_id', 'hourmin', 'history')
ITEM = ('video_id', 'duration_ms')


def get_config(model_name: str = 'mmoe'):
  if model_name not in MODELS:
    raise ValueError(
      f'configs/kuairand_video.py: model {model_name!r} is not one of '
      f'{sorted(MODELS)}'
    )
  config = kuairand.get_config('mmoe,plain')
  config.model_name = model_name
  config.model.num_experts = None
  config.model.expert_hidden = None
  config.model.update(MODELS[model_name])
  if model_name.startswith('two_tower'):
    config.model.user_features = USER
    config.model.item_features = ITEM
    config.model.user_hidden = (64, 32)
    config.model.item_hidden = (64, 32)
    if model_name == 'two_tower':
      config.towers.hidden = ()  # The bilinear form's diagonal and bias.
  d = config.dataset
  d.name = 'kuairand_video'
  features = d.features.to_dict()
  features['history']['pooling'] = 'din'
  features['session'] = {
    'kind': 'session',
    'user': 'user_id',
    'time': 'time_ms',
    'gap': SESSION_GAP_MS,
  }
  d.features = features
  d.tasks = {
    'click': {'label': 'is_click'},
    'long_view': {'label': 'long_view'},
    'watch': {
      'label': 'play_time_ms',
      'kind': 'weighted_logistic',
      'weight': 1e-4,
    },
    'goes_on': {'label': 'session.continues'},
    'depth': {
      'label': 'session.remaining',
      'kind': 'regression',
      'transform': 'log1p',
      'scale': 'standard',
    },
  }
  d.task_order = ('click', 'long_view', 'watch', 'goes_on', 'depth')
  return config
