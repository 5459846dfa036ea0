"""Building blocks shared by the architectures: MLP, expert banks, gates and
the feature embedding."""

from mtl.core.layers.embedding import FeatureEmbedding
from mtl.core.layers.experts import ExpertBank, Gate, Gates, GroupedExpertBank
from mtl.core.layers.mlp import MLP

__all__ = [
  'MLP',
  'ExpertBank',
  'FeatureEmbedding',
  'Gate',
  'Gates',
  'GroupedExpertBank',
]
