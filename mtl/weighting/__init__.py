"""Task-balancing methods by name: `WEIGHTINGS[config.weighting_name]`.

Each entry is a factory taking the method's hyper-parameters as keyword
arguments (`config.weighting`) and returning a `WeightingMethod`.
"""

from mtl.weighting.base import WeightingMethod, chain
from mtl.weighting.cagrad import cagrad
from mtl.weighting.dwa import dwa
from mtl.weighting.fixed import equal, fixed
from mtl.weighting.gradnorm import gradnorm
from mtl.weighting.imtl import imtl_g
from mtl.weighting.mgda import mgda
from mtl.weighting.nash_mtl import nash_mtl
from mtl.weighting.pcgrad import pcgrad
from mtl.weighting.rlw import rlw
from mtl.weighting.scheduled import scheduled
from mtl.weighting.uncertainty import uncertainty

WEIGHTINGS = {
  'equal': equal,
  'fixed': fixed,
  'scheduled': scheduled,
  'uncertainty': uncertainty,
  'gradnorm': gradnorm,
  'dwa': dwa,
  'rlw': rlw,
  # Gradient space: combine the per-task backbone gradients.
  'pcgrad': pcgrad,
  'mgda': mgda,
  'cagrad': cagrad,
  'imtl_g': imtl_g,
  'nash_mtl': nash_mtl,
}

__all__ = ['WEIGHTINGS', 'WeightingMethod', 'chain']
