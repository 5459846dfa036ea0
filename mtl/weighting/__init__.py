"""Task-balancing methods by name: `WEIGHTINGS[config.weighting_name]`.

Each entry is a factory taking the method's hyper-parameters as keyword
arguments (`config.weighting`) and returning a `WeightingMethod`.
"""

from mtl.weighting.base import WeightingMethod, chain
from mtl.weighting.fixed import equal, fixed
from mtl.weighting.scheduled import scheduled

WEIGHTINGS = {
  'equal': equal,
  'fixed': fixed,
  'scheduled': scheduled,
}

__all__ = ['WEIGHTINGS', 'WeightingMethod', 'chain']
