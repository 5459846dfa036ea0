"""Single-Task on census-income: T separate networks, nothing shared.

Paper: Ma et al., KDD 2018, Table 1.

  mtl-train --config=configs/census_single_task.py \
    --workdir=workdirs/census_single_task

Protocol and task group are config keys:
  --config.dataset.protocol=library   (education kept as an input)
  --config.dataset.task_group=2       (education + never married)
"""

from configs import common


def get_config():
  config = common.base_config('single_task', 'census_income')
  return config
