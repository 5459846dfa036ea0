"""Backbones by name: x [B, D] (or [T, B, D]) -> per-task z [T, B, H].

Every entry is a Linen module built as `ARCHITECTURES[name](num_tasks=T,
**kwargs)` and called as `backbone(x, train=...)`. Its class attribute
`per_task_inputs` says whether it takes x [T, B, D] (one embedding per task;
[T + 1, B, D] with STEM's shared one: `shared_inputs`) or x [B, D].
Contract tests run over every entry of this dict.
"""

from mtl.core.architectures.adatt import AdaTT
from mtl.core.architectures.aitm import AITM
from mtl.core.architectures.dbmtl import DBMTL
from mtl.core.architectures.dselect_k import DSelectK
from mtl.core.architectures.esmm import ESMM
from mtl.core.architectures.home import HoME
from mtl.core.architectures.mmoe import MMoE, OMoE
from mtl.core.architectures.pepnet import PEPNet
from mtl.core.architectures.ple import CGC, PLE
from mtl.core.architectures.shared_bottom import SharedBottom
from mtl.core.architectures.single_task import SingleTask
from mtl.core.architectures.stem import STEM
from mtl.core.architectures.two_tower import TwoTower, TwoTowerMMoE

ARCHITECTURES = {
  'single_task': SingleTask,
  'shared_bottom': SharedBottom,
  'omoe': OMoE,
  'mmoe': MMoE,
  'cgc': CGC,
  'ple': PLE,
  'dselect_k': DSelectK,
  'dbmtl': DBMTL,
  'adatt': AdaTT,
  'home': HoME,
  'pepnet': PEPNet,
  'stem': STEM,
  # Entire-space models of a click -> conversion funnel.
  'esmm': ESMM,
  'aitm': AITM,
  # User and item towers, one interaction per task.
  'two_tower': TwoTower,
  'two_tower_mmoe': TwoTowerMMoE,
}

__all__ = [
  'AITM',
  'AdaTT',
  'ARCHITECTURES',
  'ESMM',
  'CGC',
  'HoME',
  'DBMTL',
  'DSelectK',
  'MMoE',
  'OMoE',
  'PEPNet',
  'PLE',
  'STEM',
  'SharedBottom',
  'SingleTask',
  'TwoTower',
  'TwoTowerMMoE',
]
