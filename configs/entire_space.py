"""Clicks and conversions with known propensities (mtl.data.entire_space):
ESMM's debiasing, measurable.

  mtl-train --config=configs/entire_space.py:esmm --workdir=workdirs/es_esmm
  mtl-train --config=configs/entire_space.py:single_task \
    --workdir=workdirs/es_base

The argument picks the model (default esmm). `single_task` is the ESMM
paper's BASE: its CVR network is trained on the clicked impressions only.
Every model is scored on `cvr_all`, its CVR output over ALL impressions
against the latent conversions, and on `conversion` (CVR on clicks).
Selection by the validation AUC of the first task (click). Sizes are small
on purpose (a 2-core CPU): embeddings 8, networks 64-32.
"""

from configs import common

MODELS = {
  'esmm': dict(hidden=(64, 32)),
  'aitm': dict(hidden=(64, 32)),
  'single_task': dict(hidden=(64, 32)),
  'shared_bottom': dict(hidden=(64, 32)),
  'mmoe': dict(num_experts=4, expert_hidden=(32,)),
}


def get_config(model_name: str = 'esmm'):
  if model_name not in MODELS:
    raise ValueError(
      f'configs/entire_space.py: model {model_name!r} is not one of '
      f'{sorted(MODELS)}'
    )
  config = common.base_config(model_name, 'entire_space')
  config.model.update(MODELS[model_name])
  config.towers.hidden = (16,)
  config.batch_size = 2048
  config.num_epochs = 6
  config.eval_batch_size = 10_000
  config.log_every_steps = 50
  return config
