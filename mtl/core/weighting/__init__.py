"""Task-balancing methods by name: `WEIGHTINGS[config.weighting_name]`.

Each entry is a factory taking the method's hyper-parameters as keyword
arguments (`config.weighting`) and returning a `WeightingMethod`.
"""

from mtl.core.weighting.aligned_mtl import aligned_mtl
from mtl.core.weighting.base import WeightingMethod, chain
from mtl.core.weighting.cagrad import cagrad
from mtl.core.weighting.db_mtl import db_mtl
from mtl.core.weighting.dwa import dwa
from mtl.core.weighting.excess_mtl import excess_mtl
from mtl.core.weighting.fairgrad import fairgrad
from mtl.core.weighting.famo import famo
from mtl.core.weighting.fixed import equal, fixed
from mtl.core.weighting.gls import gls
from mtl.core.weighting.graddrop import graddrop
from mtl.core.weighting.gradnorm import gradnorm
from mtl.core.weighting.gradvac import gradvac
from mtl.core.weighting.imtl import imtl_g
from mtl.core.weighting.mgda import mgda
from mtl.core.weighting.moco import moco
from mtl.core.weighting.modo import modo
from mtl.core.weighting.nash_mtl import nash_mtl
from mtl.core.weighting.pcgrad import pcgrad
from mtl.core.weighting.rlw import rlw
from mtl.core.weighting.scheduled import scheduled
from mtl.core.weighting.sdmgrad import sdmgrad
from mtl.core.weighting.stch import stch
from mtl.core.weighting.uncertainty import uncertainty
from mtl.core.weighting.upgrad import upgrad

WEIGHTINGS = {
  'equal': equal,
  'fixed': fixed,
  'scheduled': scheduled,
  'uncertainty': uncertainty,
  'gradnorm': gradnorm,
  'dwa': dwa,
  'rlw': rlw,
  'gls': gls,
  'stch': stch,
  'famo': famo,
  'excess_mtl': excess_mtl,
  # Gradient space: combine the per-task backbone gradients.
  'pcgrad': pcgrad,
  'mgda': mgda,
  'cagrad': cagrad,
  'imtl_g': imtl_g,
  'nash_mtl': nash_mtl,
  'aligned_mtl': aligned_mtl,
  'fairgrad': fairgrad,
  'upgrad': upgrad,
  'gradvac': gradvac,
  # Gradient space, the combined vector itself (`task_grads`).
  'graddrop': graddrop,
  'db_mtl': db_mtl,
  'moco': moco,
  'modo': modo,
  'sdmgrad': sdmgrad,
}

__all__ = ['WEIGHTINGS', 'WeightingMethod', 'chain']
