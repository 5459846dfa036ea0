"""A seconds-long run of every part of the pipeline, used by the tests.

  mtl-train --config=configs/smoke.py --workdir=workdirs/smoke
  mtl-train --config=configs/smoke.py:ple,census --workdir=workdirs/smoke_census

The argument is 'model[,dataset]' (default 'mmoe,synthetic'); census runs read
the real data from $MTL_DATA_DIR/census-income-kdd.
"""

from configs import common

SIZES = {
  'single_task': dict(hidden=(8,)),
  'shared_bottom': dict(hidden=(8,)),
  'omoe': dict(num_experts=2, expert_hidden=(8,)),
  'mmoe': dict(num_experts=2, expert_hidden=(8,)),
  'cgc': dict(num_specific_experts=1, num_shared_experts=1, expert_hidden=(8,)),
  'ple': dict(
    num_levels=2,
    num_specific_experts=1,
    num_shared_experts=1,
    expert_hidden=(8,),
  ),
}
DATASETS = {'synthetic': 'synthetic', 'census': 'census_income'}


def get_config(arg: str = 'mmoe,synthetic'):
  model_name, _, dataset = arg.partition(',')
  dataset = dataset or 'synthetic'
  if model_name not in SIZES or dataset not in DATASETS:
    raise ValueError(
      f'configs/smoke.py: argument {arg!r}, expected model,dataset with '
      f'model in {sorted(SIZES)} and dataset in {sorted(DATASETS)}'
    )
  config = common.base_config(model_name, DATASETS[dataset])
  config.model.update(SIZES[model_name])
  if dataset == 'synthetic':
    config.dataset.update(
      dict(d=8, n_train=512, n_validation=128, n_test=128, m=2)
    )
  config.embedding.dim = 2
  config.towers.hidden = (4,)
  config.batch_size = 64
  config.num_epochs = 2
  config.steps_per_dispatch = 4
  config.eval_batch_size = 64
  config.log_every_steps = 2
  config.progress_bar = False
  config.diagnostics_every_steps = 4
  return config
