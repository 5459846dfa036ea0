"""What an architecture is: the `Architecture` protocol and its defaults.

An architecture (a "backbone") maps the embedded features to one
representation per task, x [B, D] (or [T + shared_inputs, B, D]) -> z
[T, B, H]; the model
puts the embedding in front of it and the towers behind it (`mtl.core.model`).
It is one Linen module in one file, registered by one line in
`ARCHITECTURES`. Its keyword arguments and their defaults are its dataclass
fields: the config's `model.<key>` reaches it only through them, so a default
lives in exactly one place.

Every hook below has a default in `Backbone`, the base class of every
registered architecture; an architecture overrides only what differs. The
contract tests (tests/core/architectures/test_contract.py) run over every entry
of
`ARCHITECTURES` and check each hook.
"""

from typing import ClassVar, Protocol, runtime_checkable

import flax.linen as nn
import jax


@runtime_checkable
class Architecture(Protocol):
  """The interface the model, the train step and the trainer rely on.

  Attributes:
    num_tasks: T, the number of outputs (heads).
    per_task_inputs: True when it takes x [T + shared_inputs, B, D], one
      embedding table set per task (Single-Task shares nothing), then
      `shared_inputs` sets the tasks share; else x [B, D].
    shared_inputs: with per_task_inputs, how many embedding table sets the
      tasks share, after the T per-task ones (STEM-Net: 1); 0 by default.
    shared_params: the top-level params group the tasks share, where
      gradient-space balancing methods combine per-task gradients:
      'backbone', or 'embed' for towers that share only the embedding (ESMM,
      AITM).
    num_towers: how many towers follow the backbone; None: one per task.
      ESMM has 2 towers (CTR, CVR) and 3 outputs.
    fixed_num_tasks: the number of outputs it always has, if fixed (ESMM: 3).
    input_layout: True when `__call__` also takes `layout`: which columns
      of x hold which feature, ((name, start, stop), ...) in column order
      (model.feature_layout), or None when the names are unknown (a bare
      backbone); two towers split x by it.
  """

  num_tasks: int
  per_task_inputs: ClassVar[bool]
  shared_inputs: ClassVar[int]
  shared_params: ClassVar[str]
  num_towers: ClassVar[int | None]
  fixed_num_tasks: ClassVar[int | None]
  input_layout: ClassVar[bool]

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [B, D] (or [T + shared_inputs, B, D]) -> z [T_towers, B, H]."""

  def gradnorm_layer(self) -> tuple[str, ...] | None:
    """The params path of the last shared layer's kernel (GradNorm's W,
    Chen et al. ICML 2018 Sec. 3), or None when nothing is shared."""

  @staticmethod
  def head_logits(logits: jax.Array) -> jax.Array:
    """Tower logits [T_towers, B] -> output logits [T, B]."""

  def extra_losses(self, logits: jax.Array) -> jax.Array | None:
    """Per-example loss terms [T, B] added to the tasks' losses, or None.
    Terms of the params (DSelect-k's regulariser) are sown instead, into
    the collection EXTRA_LOSSES while training (`training_logits`)."""

  @staticmethod
  def adapt_dataset(dataset):
    """The dataset in the task layout this architecture trains on."""


# The collection a backbone sows per-example loss terms [T, B] into when
# `train` is True; the train step adds them to the tasks' losses.
EXTRA_LOSSES = 'extra_losses'


class Backbone(nn.Module):
  """The defaults of every `Architecture` hook."""

  per_task_inputs: ClassVar[bool] = False
  shared_inputs: ClassVar[int] = 0
  shared_params: ClassVar[str] = 'backbone'
  num_towers: ClassVar[int | None] = None
  fixed_num_tasks: ClassVar[int | None] = None
  input_layout: ClassVar[bool] = False

  def gradnorm_layer(self) -> tuple[str, ...] | None:
    return None

  @staticmethod
  def head_logits(logits: jax.Array) -> jax.Array:
    return logits

  def extra_losses(self, logits: jax.Array) -> jax.Array | None:
    del logits
    return None

  @staticmethod
  def adapt_dataset(dataset):
    return dataset


def input_sets(backbone) -> int | None:
  """The leading axis of `backbone`'s x: T + shared_inputs embedding table
  sets with per_task_inputs, None for x [B, D] (one set, no axis)."""
  if not backbone.per_task_inputs:
    return None
  return backbone.num_tasks + backbone.shared_inputs


def dense_kernel(*path: str, num_layers: int) -> tuple[str, ...]:
  """('backbone', *path, 'Dense_<num_layers - 1>', 'kernel'): the kernel of
  the last Dense layer of an `MLP` (or a vmapped bank of them) at `path`."""
  return ('backbone', *path, f'Dense_{num_layers - 1}', 'kernel')


def training_logits(model, variables, features, rng):
  """(logits [T, B], per-example extra loss terms [T, B] or None) of a
  training forward pass of a MultiTaskModel: its backbone's
  `extra_losses(logits)` plus every term the backbone sowed into
  EXTRA_LOSSES (DSelect-k's regulariser). The train step's forward."""
  logits, sown = model.apply(
    variables,
    features,
    train=True,
    rngs={'dropout': rng},
    mutable=[EXTRA_LOSSES],
  )
  extra = model.backbone.extra_losses(logits)
  for term in jax.tree.leaves(sown.get(EXTRA_LOSSES, {})):
    extra = term if extra is None else extra + term
  return logits, extra
