"""Shared-Bottom (Caruana 1997) on census-income.

Paper: Ma et al., KDD 2018, Table 1.

  mtl-train --config=configs/census_shared_bottom.py \
    --workdir=workdirs/census_shared_bottom

Protocol and task group are config keys:
  --config.dataset.protocol=library   (education kept as an input)
  --config.dataset.task_group=2       (education + never married)
"""

from configs import common


def get_config():
  config = common.base_config('shared_bottom', 'census_income')
  return config
