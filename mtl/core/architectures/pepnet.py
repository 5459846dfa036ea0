"""PEPNet: embedding and parameter personalisation by gates.

Chang, Zhang, Hui, Leng, Niu, Song, Gai, "PEPNet: Parameter and Embedding
Personalized Network for Infusing with Personalized Prior Information", KDD
2023 (arXiv 2302.01115). Both parts are built of the paper's gate neural
unit (Gate NU), two layers scaled by gamma (2 in the paper, so a gate lies
in (0, 2) and is 1 at a neutral input):

  U(u) = gamma * sigmoid(relu(u W1 + b1) W2 + b2).

EPNet (embedding personalisation). E = x [B, D] is the general embedding
(every feature's columns); E_d the domain-side features' columns
(`domain_features`). Its gate reads them and E with E's gradient stopped
(the paper's stop-gradient: the gate may not reshape the shared
embedding through its own input):

  delta_domain = U_ep(E_d (+) sg(E))  [B, D],   O_ep = delta_domain * E.

PPNet (parameter personalisation). Each task t has its own DNN of
`hidden` widths over O_ep. Every layer's input is scaled by a per-task
gate computed from the prior features' columns (`prior_features`, the
paper's user, item and author ids) and O_ep with its gradient stopped;
one Gate NU per layer gives the T tasks' gates, split:

  [delta_1^l, ..., delta_T^l] = U_pp^l(E_prior (+) sg(O_ep))  [B, T d_l],
  H_t^0 = O_ep,  H_t^{l+1} = relu((delta_t^l * H_t^l) W_t^l + b_t^l),

and z_t = H_t^L [T, B, hidden[-1]]; task t's tower follows.

Features by name (`input_layout`: the model passes which columns of x
each feature fills). `domain_features` () (the default): E_d is empty and
EPNet's gate reads sg(E) alone. `prior_features` () (the default): every
embedded categorical feature, i.e. every feature of the layout wider than
one column (a dense feature fills one); all of x when there is none or
the backbone is called without a layout (a bare backbone).

Params: 'epnet_gate' {'Dense_0', 'Dense_1'}, 'ppnet_gate_{l}' {'Dense_0',
'Dense_1' (output T d_l)}, 'task_layer_{l}' {'kernel' [T, d_l, d_{l+1}],
'bias' [T, d_{l+1}]}. Sows the gates as intermediates 'epnet_weights'
[B, D] and 'ppnet_weights_{l}' [T, B, d_l].
"""

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl.core.architectures.base import Backbone
from mtl.errors import ConfigError


class GateNU(nn.Module):
  """U(u) = scale * sigmoid(relu(u W1 + b1) W2 + b2): u [..., D_in] ->
  [..., out]."""

  width: int
  scale: float

  @nn.compact
  def __call__(self, u: jax.Array, out: int) -> jax.Array:
    h = nn.relu(nn.Dense(self.width)(u))
    return self.scale * jax.nn.sigmoid(nn.Dense(out)(h))


def _columns(layout, names, key: str):
  """The column indices of the named features of `layout`, in x's order."""
  known = [name for name, _, _ in layout]
  for name in names:
    if name not in known:
      raise ConfigError(
        f'model.{key} names {name!r}, which is not a feature; expected some '
        f'of {", ".join(known)}'
      )
  spans = [np.arange(a, b) for name, a, b in layout if name in names]
  return np.concatenate(spans).astype(np.int32) if spans else None


class PEPNet(Backbone):
  """EPNet then PPNet: x [B, D] -> z [T, B, hidden[-1]].

  Attributes:
    num_tasks: T.
    domain_features: the features of EPNet's gate (default none).
    prior_features: the features of PPNet's gates (default: every
      embedded categorical feature).
    hidden: each task's DNN widths (L >= 1 layers, each gated).
    gate_width: the hidden width of every Gate NU, >= 1.
    gate_scale: gamma > 0, a gate's upper bound (the paper's 2).
    dropout: drop rate after each task layer.
  """

  num_tasks: int
  domain_features: tuple[str, ...] = ()
  prior_features: tuple[str, ...] = ()
  hidden: tuple[int, ...] = (128, 64)
  gate_width: int = 64
  gate_scale: float = 2.0
  dropout: float = 0.0

  input_layout: ClassVar[bool] = True

  def setup(self):
    w = self.gate_width
    if not isinstance(w, int) or isinstance(w, bool) or w < 1:
      raise ConfigError(f'model.gate_width is {w!r}, expected an int >= 1')
    s = self.gate_scale
    if isinstance(s, bool) or not (
      isinstance(s, int | float) and math.isfinite(s) and s > 0
    ):
      raise ConfigError(
        f'model.gate_scale is {s!r}, expected a finite number > 0'
      )
    if not self.hidden:
      raise ConfigError('model.hidden is (), expected at least one width')
    self.epnet_gate = GateNU(w, float(s))
    self.ppnet_gates = [
      GateNU(w, float(s), name=f'ppnet_gate_{i}')
      for i in range(len(self.hidden))
    ]
    dense = nn.vmap(
      nn.Dense,
      variable_axes={'params': 0},
      split_rngs={'params': True},
      in_axes=0,
      out_axes=0,
      axis_size=self.num_tasks,
    )
    self.task_layers = [
      dense(width, name=f'task_layer_{i}')
      for i, width in enumerate(self.hidden)
    ]
    self.drop = nn.Dropout(self.dropout)

  def gradnorm_layer(self) -> tuple[str, ...]:
    """EPNet's gate output layer: O_ep feeds every task."""
    return ('backbone', 'epnet_gate', 'Dense_1', 'kernel')

  def domain_columns(self, layout):
    if layout is None:
      return None
    return _columns(layout, self.domain_features, 'domain_features')

  def prior_columns(self, layout):
    if layout is None:
      return None
    if self.prior_features:
      return _columns(layout, self.prior_features, 'prior_features')
    wide = tuple(name for name, a, b in layout if b - a > 1)
    return _columns(layout, wide, 'prior_features')

  def epnet(self, x: jax.Array, layout=None):
    """x [B, D] -> (O_ep [B, D], delta_domain [B, D])."""
    cols = self.domain_columns(layout)
    u = jax.lax.stop_gradient(x)
    if cols is not None:
      u = jnp.concatenate([x[:, cols], u], axis=-1)
    delta = self.epnet_gate(u, x.shape[-1])
    return delta * x, delta

  def ppnet_gate(self, i: int, x: jax.Array, o_ep: jax.Array, layout=None):
    """Layer i's gates [T, B, d_i] from the prior columns of x and sg(O_ep)."""
    cols = self.prior_columns(layout)
    prior = x if cols is None else x[:, cols]
    u = jnp.concatenate([prior, jax.lax.stop_gradient(o_ep)], axis=-1)
    d = o_ep.shape[-1] if i == 0 else self.hidden[i - 1]
    delta = self.ppnet_gates[i](u, self.num_tasks * d)
    return jnp.moveaxis(delta.reshape(-1, self.num_tasks, d), 1, 0)

  def __call__(self, x, *, train: bool, layout=None) -> jax.Array:
    """x [B, D] -> z [T, B, hidden[-1]]."""
    o_ep, delta = self.epnet(x, layout)
    self.sow('intermediates', 'epnet_weights', delta)
    h = jnp.broadcast_to(o_ep, (self.num_tasks, *o_ep.shape))
    for i, layer in enumerate(self.task_layers):
      gate = self.ppnet_gate(i, x, o_ep, layout)
      self.sow('intermediates', f'ppnet_weights_{i}', gate)
      h = nn.relu(layer(gate * h))
      h = self.drop(h, deterministic=not train)
    return h
