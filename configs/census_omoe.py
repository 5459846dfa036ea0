"""OMoE: one gate shared by all tasks on census-income.

Paper: Ma et al., KDD 2018, Table 1.

  mtl-train --config=configs/census_omoe.py \
    --workdir=workdirs/census_omoe

Protocol and task group are config keys:
  --config.dataset.protocol=library   (education kept as an input)
  --config.dataset.task_group=2       (education + never married)
"""

from configs import common


def get_config():
  config = common.base_config('omoe', 'census_income')
  return config
