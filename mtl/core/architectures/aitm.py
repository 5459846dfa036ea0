"""AITM: adaptive information transfer between sequential conversion steps.

Xi, Chen, Liu, Zhu, Li, Ye, Gai, Wang, "Modeling the Sequential Dependence
among Audience Multi-step Conversions with Multi-task Learning in Targeted
Display Advertising", KDD 2021 (Sec. 3). Tasks are steps of one funnel
(impression -> click -> conversion), each over ALL impressions. Each task t
has a tower q_t = f_t(x) on the shared embeddings; from task 2 on, the
Adaptive Information Transfer module mixes what the previous task passes on,
p_{t-1} = g_{t-1}(z_{t-1}), with q_t by attention (Eqs. 2-4):

  w_u = softmax_u( <h1(u), h2(u)> / sqrt(k) ),  z_t = sum_u w_u h3(u),
  u in {p_{t-1}, q_t};  z_1 = q_1.

Loss (Eq. 6): the tasks' cross-entropies plus the behavioural expectation
calibrator alpha * sum_{t>1} max(y_t - y_{t-1}, 0), which penalises a
conversion probability above the click probability. In mtl the calibrator is
the per-example term `extra_losses` adds to task t's loss, so every
balancing method weighs it with its task.

`adapt_dataset` turns a click/conversion dataset (conversion in the click
sample space) into (click, ctcvr): the conversion step over all impressions,
label click & conversion; the original conversion task stays, metric-only,
scored on the ctcvr output over its clicked rows.
"""

import dataclasses
from typing import TYPE_CHECKING, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl.core.architectures import esmm
from mtl.core.architectures.base import Backbone
from mtl.core.layers.experts import ExpertBank
from mtl.core.layers.mlp import MLP

if TYPE_CHECKING:  # The core does not import the data layer at run time.
  from mtl.data.dataset import Dataset


def adapt_dataset(ds: 'Dataset') -> 'Dataset':
  """(click, conversion, ...) -> (click, ctcvr, conversion@ctcvr)."""
  click, conversion = esmm.click_and_conversion(ds)
  labels = esmm.entire_space(ds)
  splits = {}
  for split, a in ds.splits.items():
    y, m = labels[split]
    splits[split] = {
      **a,
      'labels': np.stack([a['labels'][0], y, a['labels'][1]]),
      'mask': np.stack([a['mask'][0], m, a['mask'][1]]),
    }
  tasks = (
    click,
    dataclasses.replace(conversion, name='ctcvr'),  # Its loss keys.
    dataclasses.replace(conversion, train=False, head='ctcvr'),
  )
  return dataclasses.replace(ds, tasks=tasks, splits=splits)


class AIT(nn.Module):
  """Attention over (p_{t-1}, q_t) [2, B, H] -> z_t [B, H] (Eqs. 2-4)."""

  @nn.compact
  def __call__(self, u: jax.Array) -> jax.Array:
    k = u.shape[-1]
    h1 = nn.Dense(k, name='query')(u)
    h2 = nn.Dense(k, name='key')(u)
    h3 = nn.Dense(k, name='value')(u)
    score = jnp.sum(h1 * h2, axis=-1) / jnp.sqrt(k)  # [2, B]
    w = jax.nn.softmax(score, axis=0)
    self.sow('intermediates', 'ait_weights', w)
    return jnp.einsum('ub,ubh->bh', w, h3)


class AITM(Backbone):
  """Per-task towers with information transfer: x [B, D] -> z [T, B, H].

  Params 'networks' (the T towers f_t, stacked [T, ...]), 'transfer_<t>'
  (g_t, a one-layer MLP) and 'ait_<t>' for t >= 1.

  Attributes:
    num_tasks: T, the funnel's steps in order.
    hidden: each tower's layer widths (H = hidden[-1]).
    dropout: drop rate inside the towers.
    calibration: alpha of the behavioural expectation calibrator.
  """

  # The towers share only the embeddings: gradient-space balancing methods
  # combine the tasks' gradients there.
  shared_params: ClassVar[str] = 'embed'
  adapt_dataset: ClassVar = staticmethod(adapt_dataset)

  num_tasks: int
  # AITM paper, Sec. 4.1.3: towers 128-64-32, calibrator alpha 0.6.
  hidden: tuple[int, ...] = (128, 64, 32)
  dropout: float = 0.0
  calibration: float = 0.6

  def gradnorm_layer(self) -> tuple[str, ...]:
    """The shared embedding table: the towers share nothing else."""
    return ('embed', 'table')

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [B, D] -> z [T, B, H]."""
    q = ExpertBank(self.num_tasks, self.hidden, self.dropout, name='networks')(
      x, train=train
    )
    z = [q[0]]
    for t in range(1, self.num_tasks):
      p = MLP((q.shape[-1],), name=f'transfer_{t - 1}')(z[-1], train=train)
      z.append(AIT(name=f'ait_{t}')(jnp.stack([p, q[t]])))
    return jnp.stack(z)

  def extra_losses(self, logits: jax.Array) -> jax.Array:
    """Per-example calibrator [T, B]: alpha * max(y_t - y_{t-1}, 0)."""
    y = jax.nn.sigmoid(logits)
    gap = jnp.maximum(y[1:] - y[:-1], 0.0) * self.calibration
    return jnp.concatenate([jnp.zeros_like(y[:1]), gap])
