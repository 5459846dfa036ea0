"""Census-income (UCI KDD), the MMoE and PLE papers' public benchmark.

Ma et al., KDD 2018, Sec. 6.3, Table 1 (MMoE, OMoE, Shared-Bottom,
Single-Task); Tang et al., RecSys 2020, Table 5 (CGC, PLE).

  mtl-train --config=configs/census.py --workdir=workdirs/census_best
  mtl-train --config=configs/census.py:mmoe --workdir=workdirs/census_mmoe
  mtl-train --config=configs/census.py:ple --workdir=workdirs/census_ple

The file alone is the configuration best on validation,
'mmoe,DEFAULT_PARTS' (experiments/real_data.py; docs/real-data.md: MMoE
with periodic embeddings of the dense columns, which beats the tuned GBDT
on income). The argument after ':' is MODEL[,PART+PART] (configs/common.py
PARTS); 'MODEL' alone is the paper's setup, the replication scripts' and
the README main job's. MODEL is any registered architecture without a
funnel or user/item towers (census_models()); its sizes are the defaults of
its own signature (mtl/core/architectures/). Protocol and task group are
config keys:
  --config.dataset.protocol=library   (education kept as an input)
  --config.dataset.task_group=2       (education + never married)
"""

from configs import common
from mtl.core.architectures import ARCHITECTURES, two_tower
from mtl.core.architectures.base import Backbone
from mtl.errors import ConfigError

# One census epoch (199,523 rows / 1,024 = 194 steps) per DWA window, as in
# the DWA paper (Liu et al., CVPR 2019: weights from the last two epochs).
STEPS_PER_EPOCH = 194


# The parts best on validation (experiments/real_data.py, both protocols),
# taken when the file is given without an argument.
DEFAULT_PARTS = 'plr'


def get_config(arg: str = f'mmoe,{DEFAULT_PARTS}'):
  """'MODEL' (the paper's setup) or 'MODEL,PART+PART' (configs/common.py
  PARTS: the wide part, crosses, the dense columns' embedding, selection;
  census has no 'counts'); no argument: 'mmoe,DEFAULT_PARTS'."""
  model_name, parts = common.split_arg(arg, 'census', census_models(), 'plain')
  if parts & {'counts', 'user_rates'}:
    raise ConfigError(
      f"configs/census.py: argument {arg!r}, expected no 'counts' or "
      "'user_rates' part "
      '(census rows are people, with no time order to count over)'
    )
  config = common.base_config(model_name, 'census_income')
  config.weighting.dwa.window_steps = STEPS_PER_EPOCH
  common.apply_parts(config, parts, stem='census')
  return config


def census_models() -> list[str]:
  """Every registered architecture that needs no click -> conversion funnel
  (ESMM and AITM re-target a funnel dataset: `adapt_dataset`) and no user
  and item features (the two-tower models; census rows are people, with no
  items). PEPNet reads features by name too, but any features."""
  return sorted(
    n
    for n, a in ARCHITECTURES.items()
    if a.adapt_dataset is Backbone.adapt_dataset
    and not issubclass(a, two_tower.TwoTower)
  )
