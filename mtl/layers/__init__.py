"""Building blocks shared by the architectures: MLP, expert banks, gates and
the feature embedding."""

from mtl.layers.embedding import FeatureEmbedding
from mtl.layers.experts import ExpertBank, Gate, Gates, GroupedExpertBank
from mtl.layers.mlp import MLP

__all__ = [
  'MLP',
  'ExpertBank',
  'FeatureEmbedding',
  'Gate',
  'Gates',
  'GroupedExpertBank',
]
