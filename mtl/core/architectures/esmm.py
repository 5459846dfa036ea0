"""ESMM: the entire-space multi-task model of post-click conversion.

Ma, Zhao, Huang, Wang, Hu, Zhu, Gai, "Entire Space Multi-Task Model: An
Effective Approach for Estimating Post-Click Conversion Rate", SIGIR 2018.
A CTR network and a CVR network share the embeddings; over ALL impressions,

  pCTCVR = pCTR x pCVR,  L = BCE(click, pCTR) + BCE(click & conversion, pCTCVR),

so the CVR network is never trained on the clicked impressions alone (the
sample selection bias of a CVR model) yet pCVR = pCTCVR / pCTR. CVR AUC is
measured on clicked impressions, CTCVR AUC on all (Sec. 4.2).

In mtl: a click/conversion dataset, whose conversion task lives
in the click sample space (mask = click), becomes the tasks (click, ctcvr,
<conversion>) with `adapt_dataset`: ctcvr = click & conversion over all
impressions, trained; <conversion> metric-only (`train=False`), scored on
the CVR output over its clicked rows. The model's outputs are (CTR logit a,
CTCVR logit, CVR logit b), the CTCVR logit being exactly logit(sigmoid(a) x
sigmoid(b)) = a + b - log(1 + e^a + e^b), stable for any a, b. Every
balancing method then weighs ESMM's two losses, as the paper's sum does with
weights 1.
"""

import dataclasses
from typing import TYPE_CHECKING, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl.core.architectures.base import Backbone
from mtl.core.layers.experts import ExpertBank
from mtl.core.tasks import Task
from mtl.errors import ConfigError

if TYPE_CHECKING:  # The core does not import the data layer at run time.
  from mtl.data.dataset import Dataset


def click_and_conversion(ds: 'Dataset') -> tuple[Task, Task]:
  """The dataset's click and conversion tasks, checked; one-line errors."""
  if len(ds.tasks) < 2 or not all(t.kind == 'binary' for t in ds.tasks[:2]):
    raise ConfigError(
      f'dataset {ds.name!r} has tasks {[t.name for t in ds.tasks]}, expected '
      'a binary click task then a binary conversion task (ali_ccp, '
      'aliexpress, entire_space)'
    )
  train = ds.splits['train']
  if not (train['mask'][0] > 0).all():
    raise ConfigError(
      f'dataset {ds.name!r}: task {ds.tasks[0].name!r} must cover every '
      'impression (mask all 1), as a click task does'
    )
  clicked = train['labels'][0] > 0
  if not np.array_equal(train['mask'][1] > 0, clicked):
    raise ConfigError(
      f'dataset {ds.name!r}: task {ds.tasks[1].name!r} must live in the click '
      "sample space (mask = click); give it the table task key 'where': "
      "'click == 1'"
    )
  return ds.tasks[0], ds.tasks[1]


def entire_space(ds: 'Dataset', name: str = 'ctcvr') -> dict:
  """Per split: the click & conversion label over all impressions."""
  out = {}
  for split, a in ds.splits.items():
    clicked = (a['labels'][0] > 0) & (a['mask'][0] > 0)
    converted = clicked & (a['labels'][1] > 0) & (a['mask'][1] > 0)
    out[split] = (converted.astype(np.float32), a['mask'][0].copy())
  return out


def adapt_dataset(ds: 'Dataset') -> 'Dataset':
  """(click, conversion, ...) -> (click, ctcvr, conversion metric-only, ...)."""
  click, conversion = click_and_conversion(ds)
  ctcvr = dataclasses.replace(conversion, name='ctcvr')  # Its loss keys.
  labels = entire_space(ds)
  splits = {}
  for split, a in ds.splits.items():
    y, m = labels[split]
    splits[split] = {
      **a,
      'labels': np.concatenate([a['labels'][:1], y[None], a['labels'][1:]]),
      'mask': np.concatenate([a['mask'][:1], m[None], a['mask'][1:]]),
    }
  tasks = (
    click,
    ctcvr,
    dataclasses.replace(conversion, train=False),
    *ds.tasks[2:],
  )
  return dataclasses.replace(ds, tasks=tasks, splits=splits)


def ctcvr_logit(a: jax.Array, b: jax.Array) -> jax.Array:
  """logit(sigmoid(a) * sigmoid(b)) = a + b - log(1 + e^a + e^b)."""
  zero = jnp.zeros_like(a)
  return a + b - jax.nn.logsumexp(jnp.stack([zero, a, b]), axis=0)


class ESMM(Backbone):
  """CTR and CVR networks on shared embeddings: x [B, D] -> z [2, B, H].

  The model's towers turn z into (a, b); `head_logits` gives the outputs
  (CTR a, CTCVR, CVR b). Params 'networks' {'mlp': ...} stacked [2, ...]
  (0: CTR, 1: CVR).

  Attributes:
    num_tasks: the model's outputs, 3 (click, ctcvr, conversion).
    hidden: each network's layer widths (the paper: 360-200-80).
    dropout: drop rate after each hidden layer.
  """

  # The towers share only the embeddings: gradient-space balancing methods
  # combine the tasks' gradients there.
  shared_params: ClassVar[str] = 'embed'
  num_towers: ClassVar[int] = 2
  fixed_num_tasks: ClassVar[int] = 3
  adapt_dataset: ClassVar = staticmethod(adapt_dataset)

  num_tasks: int
  # ESMM paper, Sec. 4.2: MLP 360-200-80 per network.
  hidden: tuple[int, ...] = (360, 200, 80)
  dropout: float = 0.0

  def gradnorm_layer(self) -> tuple[str, ...]:
    """The shared embedding table: the networks share nothing else."""
    return ('embed', 'table')

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [B, D] -> z [2, B, H] (CTR network, CVR network)."""
    if self.num_tasks != 3:
      raise ConfigError(
        f'esmm has 3 outputs (click, ctcvr, conversion), got num_tasks='
        f'{self.num_tasks}: train it on a click/conversion dataset'
      )
    return ExpertBank(2, self.hidden, self.dropout, name='networks')(
      x, train=train
    )

  @staticmethod
  def head_logits(logits: jax.Array) -> jax.Array:
    """Tower logits (a, b) [2, B] -> (a, ctcvr, b) [3, B]."""
    a, b = logits[0], logits[1]
    return jnp.stack([a, ctcvr_logit(a, b), b])
