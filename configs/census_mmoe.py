"""MMoE on census-income: the README's main job (= configs/census.py:mmoe).

Paper: Ma et al., KDD 2018, Sec. 6.3, Table 1.

  mtl-train --config=configs/census_mmoe.py --workdir=workdirs/census_mmoe
"""

from configs import census


def get_config():
  return census.get_config('mmoe')
