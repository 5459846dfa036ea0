"""The MMoE paper's synthetic regression tasks (Ma et al., KDD 2018, Sec. 5).

  mtl-train --config=configs/synthetic.py:mmoe --workdir=workdirs/synth_mmoe
  mtl-train --config=configs/synthetic.py:shared_bottom --config.dataset.p=0.9 \
    --workdir=workdirs/synth_sb_p09

The argument after ':' picks the model (default mmoe). Sizes follow Sec. 5.1:
d = 100 inputs; MMoE/OMoE 8 experts x 16 units, towers 8; Shared-Bottom one
layer of 113 units (parameter-matched), towers 8; Adam.
"""

from configs import common

MODELS = {
  'mmoe': dict(num_experts=8, expert_hidden=(16,)),
  'omoe': dict(num_experts=8, expert_hidden=(16,)),
  'shared_bottom': dict(hidden=(113,)),
  'single_task': dict(hidden=(16,)),
  'cgc': dict(
    num_specific_experts=4, num_shared_experts=4, expert_hidden=(16,)
  ),
  'ple': dict(
    num_levels=2,
    num_specific_experts=4,
    num_shared_experts=4,
    expert_hidden=(16,),
  ),
}


def get_config(model_name: str = 'mmoe'):
  if model_name not in MODELS:
    raise ValueError(
      f'configs/synthetic.py: model {model_name!r} is not one of '
      f'{sorted(MODELS)}'
    )
  config = common.base_config(model_name, 'synthetic')
  config.model.update(MODELS[model_name])
  config.dataset.update(
    dict(n_train=100_000, n_validation=10_000, n_test=10_000)
  )
  config.weighting.uncertainty.forms = 'regression'
  config.towers.hidden = (8,)
  config.batch_size = 256
  config.num_epochs = 20
  config.log_every_steps = 100
  return config
