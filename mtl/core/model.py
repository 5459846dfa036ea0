"""The multi-task model: embed -> backbone -> towers, and `make_model`.

Top-level params (optimizer partitions, sharding rules and
GradNorm's "last shared layer" find parts by these names):
  embed     FeatureEmbedding: one table [sum(vocab_sizes), embed_dim]
            (plain-int vocab sizes), or one table per feature named by it
            (vocab sizes that are embedding.Column, the table dataset's;
            sequences pooled there); [T + shared_inputs, ...] for a
            backbone with `per_task_inputs`; absent when the data has no
            sparse features (nothing to learn there).
  backbone  ARCHITECTURES[model_name], x -> z [T, B, H].
  towers    Towers, params stacked [T, ...].
  wide      (config.wide.enabled) layers/wide.Wide: a linear model per
            tower over the ids, dense columns and hashed crosses, added to
            the towers' logits before `head_logits`; absent by default.
  interaction  (config.interaction 'dcn_v2') layers/interactions: the
            cross network between embed and backbone (the backbone takes
            concat(x, cross(x))); 'fm' has no params; absent by default.
The backbone and the towers compute in `precision` (config.precision,
mtl/core/precision.py); their params and the logits stay float32.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from mtl.core import precision as precision_lib
from mtl.core.architectures import ARCHITECTURES, two_tower
from mtl.core.architectures.base import input_sets
from mtl.core.layers import interactions
from mtl.core.layers import numeric as numeric_lib
from mtl.core.layers.embedding import Column, FeatureEmbedding, feature_groups
from mtl.core.layers.wide import Wide, cross_columns
from mtl.core.towers import Towers
from mtl.errors import ConfigError, did_you_mean


class MultiTaskModel(nn.Module):
  """features {'dense': [B, F], 'sparse': [B, S]} -> logits [T, B].

  Attributes:
    num_tasks: T.
    vocab_sizes: vocabulary size of each sparse column (embedding.Column
      entries: per-feature tables and pooled sequences).
    embed_dim: width of each categorical embedding.
    backbone: a module of ARCHITECTURES built with the same num_tasks.
    tower_hidden: each tower's hidden widths before its Dense(1).
    tower_dropout: drop rate inside the towers.
    feature_names: the dataset's dense_names then sparse_names, for a
      backbone with `input_layout` (feature_layout); () if unknown.
    wide: the wide part (layers/wide.Wide, one output per tower), or None.
    interaction: a key of interactions.INTERACTIONS, put between the
      embedding and the backbone.
    cross_layers: DCN-V2's number of cross layers.
    cross_low_rank: DCN-V2's rank (0: full-rank W_l).
    numeric: the dense columns' embedding (layers/numeric, replacing the
      raw columns in front of the sparse embeddings), or None.
    precision: the backbone's and towers' compute dtype, a key of
      precision.PRECISIONS ('float32': the plain model).
    embedding_dtype: the embedding tables' storage dtype, a key of
      precision.EMBEDDING_DTYPES.
    row_blocks: ((table, N), ...): tables initialised split by rows over N
      devices (layers/embedding.py), for a run that splits them.
  """

  num_tasks: int
  vocab_sizes: tuple[int, ...]
  embed_dim: int
  backbone: nn.Module
  tower_hidden: tuple[int, ...]
  tower_dropout: float = 0.0
  feature_names: tuple[str, ...] = ()
  wide: nn.Module | None = None
  interaction: str = 'none'
  cross_layers: int = 2
  cross_low_rank: int = 0
  numeric: nn.Module | None = None
  precision: str = 'float32'
  embedding_dtype: str = 'float32'
  row_blocks: tuple = ()  # ((table, N), ...): made split by rows

  @nn.compact
  def __call__(
    self, features: dict[str, jax.Array], *, train: bool
  ) -> jax.Array:
    """Logits [T, B]; dropout draws the 'dropout' rng only when training."""
    if self.backbone.num_tasks != self.num_tasks:
      raise ValueError(
        f'backbone has num_tasks={self.backbone.num_tasks}, model has '
        f'{self.num_tasks}'
      )
    sets = input_sets(self.backbone)
    if sets is not None:
      # T separate tables (single-task models share no parameter at all),
      # then the backbone's shared sets (STEM-Net's shared embedding).
      embed = nn.vmap(
        FeatureEmbedding,
        # perturbations: the sparse step's zero rows, [sets, ...] like the
        # tables.
        variable_axes={'params': 0, 'perturbations': 0},
        split_rngs={'params': True},
        in_axes=None,
        out_axes=0,
        axis_size=sets,
      )(self.vocab_sizes, self.embed_dim, self.embedding_dtype, name='embed')
    else:
      embed = FeatureEmbedding(
        self.vocab_sizes,
        self.embed_dim,
        self.embedding_dtype,
        self.row_blocks,
        name='embed',
      )
    dense = features['dense']
    if self.numeric is not None:  # [B, F] -> [B, F * d] (PLR).
      dense = self.numeric(dense)
    x = embed(dense, features['sparse'])  # [B, D] or [sets, B, D]
    if self.interaction != 'none':  # x -> concat(x, interaction(x))
      x = interactions.Interaction(
        self.interaction,
        interactions.field_widths(self.vocab_sizes, self.embed_dim),
        self.cross_layers,
        self.cross_low_rank,
        sets or 0,
        name='interaction',
      )(x)
    kwargs = {'train': train}
    if self.backbone.input_layout:  # Two towers: which columns are whose.
      kwargs['layout'] = feature_layout(
        self.vocab_sizes, self.embed_dim, self.feature_names, x.shape[-1]
      )
    # z [T, B, H]; logits [num_towers, B], float32 at any precision.
    z = precision_lib.run(self, self.precision, self.backbone, x, **kwargs)
    # Entire-space backbones (ESMM) have fewer towers than outputs and
    # derive the outputs from the towers' logits.
    num_towers = self.backbone.num_towers or self.num_tasks
    towers = Towers(
      num_towers, self.tower_hidden, self.tower_dropout, name='towers'
    )
    logits = precision_lib.run(self, self.precision, towers, z, train=train)
    if self.wide is not None:  # Wide & Deep: the logits' sum (eq. 3).
      logits = logits + self.wide(features['dense'], features['sparse'])
    return type(self.backbone).head_logits(logits)


def feature_layout(vocab_sizes, embed_dim: int, feature_names, width: int):
  """((feature, start, stop), ...): the columns of the embedded x [B, width]
  that each feature fills, in order (FeatureEmbedding's: each dense column,
  then each sparse feature's embedding, a sequence's pooled one); None
  without names. Names of a Column layout's sparse features are its
  Columns' `feature`; of plain-int vocab sizes, the sparse names."""
  if not feature_names:
    return None
  num_dense = len(feature_names) - len(vocab_sizes)
  spans = [(name, 1) for name in feature_names[:num_dense]]
  if any(isinstance(v, Column) for v in vocab_sizes):
    groups, tables = feature_groups(vocab_sizes, embed_dim)
    spans += [(g[0], tables[g[1]][1]) for g in groups]
  else:
    spans += [(name, embed_dim) for name in feature_names[num_dense:]]
  if num_dense < 0 or sum(w for _, w in spans) != width:
    raise ValueError(
      f'feature_names {tuple(feature_names)} do not fit x of width {width}'
    )
  stops = np.cumsum([w for _, w in spans])
  return tuple(
    (name, int(stop - w), int(stop))
    for (name, w), stop in zip(spans, stops, strict=True)
  )


def _accepted_keys(cls: type[nn.Module]) -> list[str]:
  """Keyword arguments an architecture takes besides num_tasks."""
  return [
    f.name
    for f in dataclasses.fields(cls)
    if f.init and f.name not in ('num_tasks', 'parent', 'name')
  ]


def _required_keys(cls: type[nn.Module]) -> list[str]:
  return [
    f.name
    for f in dataclasses.fields(cls)
    if f.init
    and f.name not in ('num_tasks', 'parent', 'name')
    and f.default is dataclasses.MISSING
    and f.default_factory is dataclasses.MISSING
  ]


_suggest = did_you_mean


def make_backbone(
  model_name: str, model_kwargs: dict[str, Any], *, num_tasks: int
) -> nn.Module:
  """ARCHITECTURES[model_name](num_tasks, **model_kwargs), with one-line
  errors naming the bad name or key and what is accepted."""
  if model_name not in ARCHITECTURES:
    names = sorted(ARCHITECTURES)
    raise ConfigError(
      f'unknown model {model_name!r}: expected one of {", ".join(names)}'
      + _suggest(model_name, names)
    )
  cls = ARCHITECTURES[model_name]
  accepted = _accepted_keys(cls)
  for key in sorted(model_kwargs):
    if key not in accepted:
      raise ConfigError(
        f'model {model_name!r} got unexpected keyword {key!r}'
        + _suggest(key, accepted)
        + f'; accepted: {", ".join(accepted)}'
      )
  missing = [k for k in _required_keys(cls) if k not in model_kwargs]
  if missing:
    raise ConfigError(
      f'model {model_name!r} is missing keyword(s) {", ".join(missing)}; '
      f'accepted: {", ".join(accepted)}'
    )
  # Config dicts may hold lists; module fields are hashable tuples.
  kwargs = {
    k: tuple(v) if isinstance(v, list) else v for k, v in model_kwargs.items()
  }
  return cls(num_tasks=num_tasks, **kwargs)


def make_model(
  model_name: str,
  model_kwargs: dict[str, Any],
  *,
  num_tasks: int,
  vocab_sizes: tuple[int, ...],
  embed_dim: int,
  tower_hidden: tuple[int, ...],
  tower_dropout: float = 0.0,
  feature_names: tuple[str, ...] = (),
  wide: dict[str, Any] | None = None,
  interaction: str = 'none',
  cross: dict[str, Any] | None = None,
  numeric: dict[str, Any] | None = None,
  precision: str = 'float32',
  embedding_dtype: str = 'float32',
) -> MultiTaskModel:
  """The MultiTaskModel of a named backbone; see make_backbone for errors.

  `wide` ({'enabled', and Wide's keywords `WIDE_KEYS`}; None or enabled
  False: no wide part), `interaction` (interactions.INTERACTIONS) and
  `cross` (CrossNetwork's num_layers, low_rank) are the config's keys of
  the same names, as is `numeric` (NUMERIC_DEFAULTS: the dense columns'
  embedding); at their defaults the model is the plain one. `precision`
  (precision.PRECISIONS) is the backbone's and towers' compute dtype,
  `embedding_dtype` (precision.EMBEDDING_DTYPES) the tables' storage dtype.
  """
  if precision not in precision_lib.PRECISIONS:
    raise ConfigError(
      f'precision is {precision!r}, expected one of '
      f'{", ".join(precision_lib.PRECISIONS)}'
    )
  backbone = make_backbone(model_name, model_kwargs, num_tasks=num_tasks)
  vocab_sizes = tuple(vocab_sizes)
  cross = {**CROSS_DEFAULTS, **dict(cross or {})}
  _check_keys('cross', cross, CROSS_DEFAULTS)
  if interaction not in interactions.INTERACTIONS:
    raise ConfigError(
      f'interaction is {interaction!r}, expected one of '
      f'{", ".join(interactions.INTERACTIONS)}'
    )
  if interaction != 'none' and backbone.input_layout:
    raise ConfigError(
      f'interaction is {interaction!r} with model {model_name!r}, expected '
      "'none': two towers split x by feature, a cross of all features has no "
      'tower'
    )
  if interaction == 'fm':
    widths = interactions.field_widths(vocab_sizes, embed_dim)
    if not widths or len(set(widths)) != 1:
      raise ConfigError(
        f"interaction is 'fm' with sparse fields of widths {widths}, "
        'expected at least one field, all of one embedding width'
      )
  return MultiTaskModel(
    num_tasks=num_tasks,
    vocab_sizes=vocab_sizes,
    embed_dim=embed_dim,
    backbone=backbone,
    tower_hidden=tuple(tower_hidden),
    tower_dropout=tower_dropout,
    feature_names=tuple(feature_names),
    wide=_wide(
      wide, backbone, model_name, num_tasks, vocab_sizes, feature_names
    ),
    interaction=interaction,
    cross_layers=int(cross['num_layers']),
    cross_low_rank=int(cross['low_rank']),
    numeric=_numeric(numeric, model_name),
    precision=precision,
    embedding_dtype=embedding_dtype,
  )


# The config's wide.<key> besides `enabled`, and cross.<key>: the keywords
# of Wide and CrossNetwork, with their defaults.
WIDE_KEYS = ('dense', 'crosses', 'cross_buckets')
WIDE_DEFAULTS = {
  'enabled': False,
  **{
    f.name: f.default for f in dataclasses.fields(Wide) if f.name in WIDE_KEYS
  },
}
CROSS_DEFAULTS = {
  f.name: f.default
  for f in dataclasses.fields(interactions.CrossNetwork)
  if f.name in ('num_layers', 'low_rank')
}


NUMERIC_DEFAULTS = numeric_lib.DEFAULTS


def check_numeric(numeric, model_name: str) -> dict:
  """The config's `numeric` section with its defaults, checked against
  itself and the architecture `model_name` (one-line ConfigErrors)."""
  numeric = {**NUMERIC_DEFAULTS, **dict(numeric or {})}
  _check_keys('numeric', numeric, NUMERIC_DEFAULTS)
  cls = ARCHITECTURES.get(model_name)
  # A model with shared embedding sets (STEM-Net) shares the dense columns'
  # embedding as it shares those sets.
  shares_nothing = cls and cls.per_task_inputs and not cls.shared_inputs
  numeric_lib.check(
    numeric, model_name, cls and cls.input_layout, shares_nothing
  )
  return numeric


def _numeric(numeric, model_name):
  """The dense columns' embedding of the config's `numeric`, or None."""
  numeric = check_numeric(numeric, model_name)
  if numeric['embedding'] == 'none':
    return None
  return numeric_lib.PeriodicEmbedding(
    int(numeric['frequencies']), int(numeric['dim']), float(numeric['sigma'])
  )


def _check_keys(section: str, values: dict, accepted: dict) -> None:
  for key in sorted(values):
    if key not in accepted:
      raise ConfigError(
        f'{section}.{key} is not a key of {section}, expected one of '
        f'{", ".join(accepted)}' + _suggest(key, accepted)
      )


def _wide(wide, backbone, model_name, num_tasks, vocab_sizes, feature_names):
  """The Wide module of the config's `wide` section, or None."""
  wide = {**WIDE_DEFAULTS, **dict(wide or {})}
  _check_keys('wide', wide, WIDE_DEFAULTS)
  if not wide['enabled']:
    return None
  if isinstance(backbone, two_tower.TwoTower):
    raise ConfigError(
      f'wide.enabled is True with model {model_name!r}, expected False: a '
      "two-tower score factors into the towers' embeddings, a wide term "
      'would not'
    )
  sparse_names = tuple(feature_names)[
    len(tuple(feature_names)) - len(vocab_sizes) :
  ]
  crosses = tuple(tuple(pair) for pair in wide['crosses'])
  cross_columns(vocab_sizes, sparse_names, crosses)  # Names known?
  return Wide(
    vocab_sizes=vocab_sizes,
    num_outputs=backbone.num_towers or num_tasks,
    sparse_names=sparse_names,
    dense=bool(wide['dense']),
    crosses=crosses,
    cross_buckets=int(wide['cross_buckets']),
  )
