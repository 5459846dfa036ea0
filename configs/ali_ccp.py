"""Click and purchase on Ali-CCP (the ESMM dataset), torch-rechub's layout.

  mtl-train --config=configs/ali_ccp.py:esmm --workdir=workdirs/aliccp_esmm
  mtl-train --config=configs/ali_ccp.py:aitm --workdir=workdirs/aliccp_aitm

The argument picks the model (esmm, aitm, mmoe, ple, shared_bottom; default
esmm). The data is $MTL_DATA_DIR/ali-ccp-sample (100/50/50 rows): smoke
scale, it proves the path, not the model. For the full Ali-CCP files add
--config.dataset.variant=full --config.dataset.manual_dir=<dir> and raise
the batch and epochs. Sizes follow the ESMM paper at a small scale
(embeddings 8; the paper: 18, networks 360-200-80).
"""

from configs import common

MODELS = {
  'esmm': dict(hidden=(64, 32)),
  'aitm': dict(hidden=(64, 32)),
  'mmoe': dict(num_experts=4, expert_hidden=(32,)),
  'ple': dict(
    num_levels=2,
    num_specific_experts=2,
    num_shared_experts=2,
    expert_hidden=(32,),
  ),
  'shared_bottom': dict(hidden=(64, 32)),
}
DATASET = 'ali_ccp'


def get_config(model_name: str = 'esmm'):
  return funnel_config(DATASET, model_name)


def funnel_config(dataset: str, model_name: str):
  """A smoke-scale click/conversion config (also configs/aliexpress.py)."""
  if model_name not in MODELS:
    raise ValueError(
      f'configs/{dataset}.py: model {model_name!r} is not one of '
      f'{sorted(MODELS)}'
    )
  config = common.base_config(model_name, dataset)
  config.model.update(MODELS[model_name])
  config.towers.hidden = (16,)
  config.batch_size = 32
  config.num_epochs = 3
  config.steps_per_dispatch = 4
  config.eval_batch_size = 64
  config.log_every_steps = 4
  config.diagnostics_every_steps = 0
  return config
