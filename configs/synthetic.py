"""The MMoE paper's synthetic regression tasks (Ma et al., KDD 2018, Sec. 5).

  mtl-train --config=configs/synthetic.py:mmoe --workdir=workdirs/synth_mmoe
  mtl-train --config=configs/synthetic.py:shared_bottom --config.dataset.p=0.9 \
    --workdir=workdirs/synth_sb_p09

The argument after ':' picks the model (default mmoe): any architecture
configs/census.py runs. Sizes follow Sec. 5.1 for the paper's models: d = 100
inputs; MMoE/OMoE 8 experts x 16 units, towers 8; Shared-Bottom one layer of
113 units (parameter-matched), towers 8; CGC/PLE the same 8 experts split 4
shared + 4 per task; Adam. The other architectures take the defaults of their
own signatures (mtl/core/architectures/), towers 8.
"""

from configs import common
from configs.census import census_models
from mtl.errors import ConfigError

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
  if model_name not in census_models():
    raise ConfigError(
      f'configs/synthetic.py: model {model_name!r}, expected one of '
      f'{", ".join(census_models())}'
    )
  config = common.base_config(model_name, 'synthetic')
  config.model.update(MODELS.get(model_name, {}))
  config.dataset.update(
    dict(n_train=100_000, n_validation=10_000, n_test=10_000)
  )
  config.weighting.uncertainty.forms = 'regression'
  config.towers.hidden = (8,)
  config.batch_size = 256
  config.num_epochs = 20
  config.log_every_steps = 100
  return config
