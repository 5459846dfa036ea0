"""MMoE: the main job on census-income.

Paper: Ma et al., KDD 2018, Sec. 6.3, Table 1.

  mtl-train --config=configs/census_mmoe.py \
    --workdir=workdirs/census_mmoe

Protocol and task group are config keys:
  --config.dataset.protocol=library   (education kept as an input)
  --config.dataset.task_group=2       (education + never married)
"""

from configs import common


def get_config():
  config = common.base_config('mmoe', 'census_income')
  return config
