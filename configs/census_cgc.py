"""CGC: task-specific + shared experts, one level on census-income.

Paper: Tang et al., RecSys 2020, Table 5.

  mtl-train --config=configs/census_cgc.py \
    --workdir=workdirs/census_cgc

Protocol and task group are config keys:
  --config.dataset.protocol=library   (education kept as an input)
  --config.dataset.task_group=2       (education + never married)
"""

from configs import common


def get_config():
  config = common.base_config('cgc', 'census_income')
  return config
