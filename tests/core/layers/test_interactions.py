"""FM and DCN-V2 against numpy formulas written from the papers, and the
model feeding the backbone concat(x, interaction(x))."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.layers.embedding import Column, FeatureEmbedding
from mtl.core.layers.interactions import (
  CrossNetwork,
  bi_interaction,
  field_widths,
)
from mtl.core.model import make_model
from mtl.core.towers import Towers
from mtl.errors import ConfigError

FAST = {'xla_backend_optimization_level': 0}
RNG = np.random.default_rng(0)


def test_fm_vector_is_rendles_formula_and_the_pairwise_sum():
  b, f, n, d = 3, 2, 4, 5  # 2 dense columns, then 4 fields of width 5.
  x = RNG.normal(size=(b, f + n * d))
  v = x[:, f:].reshape(b, n, d)
  got = np.asarray(bi_interaction(jnp.asarray(x, jnp.float32), (d,) * n))
  formula = 0.5 * (v.sum(1) ** 2 - (v**2).sum(1))
  pairs = sum(v[:, i] * v[:, j] for i, j in itertools.combinations(range(n), 2))
  np.testing.assert_allclose(formula, pairs, rtol=1e-10)
  np.testing.assert_allclose(got, pairs, rtol=1e-5, atol=1e-5)


def test_field_widths_follow_the_embedding_layout():
  assert field_widths((3, 4, 5), 2) == (2, 2, 2)
  cols = (
    Column(5, feature='u', dim=3),
    Column(7, feature='i'),
    *[Column(7, feature='h', table='i', pooling='mean')] * 4,
  )
  assert field_widths(cols, 2) == (3, 2, 2)  # A pooled sequence: one field.


def np_cross(x, layers):
  """DCN-V2 eq. 1: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, rows of x."""
  x0, xl = x, x
  for w, bias in layers:
    xl = x0 * (xl @ w.T + bias) + xl
  return xl


@pytest.mark.parametrize('low_rank', [0, 2])
def test_dcn_v2_two_layers_are_equation_1(low_rank):
  b, dim = 4, 6
  x = RNG.normal(size=(b, dim)).astype(np.float32)
  net = CrossNetwork(num_layers=2, low_rank=low_rank)
  params = net.init(jax.random.key(0), x)['params']
  layers, p = [], {}
  for layer in range(2):
    bias = RNG.normal(size=dim)
    if low_rank:  # W = U V^T, U and V [D, r] (sec. 5).
      u, v = RNG.normal(size=(2, dim, low_rank))
      p[f'down_{layer}'] = {'kernel': v}  # x @ V = (V^T x)^T
      p[f'up_{layer}'] = {'kernel': u.T, 'bias': bias}
      w = u @ v.T
    else:
      w = RNG.normal(size=(dim, dim))
      p[f'layer_{layer}'] = {'kernel': w.T, 'bias': bias}
    layers.append((w, bias))
  assert jax.tree.structure(params) == jax.tree.structure(p)
  p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
  got = jax.jit(net.apply, compiler_options=FAST)({'params': p}, x)
  want = np_cross(x.astype(np.float64), layers)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


B, T = 5, 2
VOCAB = (4, 6, 3)
FEATURES = {
  'dense': RNG.normal(size=(B, 2)).astype(np.float32),
  'sparse': np.stack([RNG.integers(0, v, B) for v in VOCAB], 1).astype(
    np.int32
  ),
}


def model_of(name, interaction, **kwargs):
  return make_model(
    name,
    dict(hidden=(4,)),
    num_tasks=T,
    vocab_sizes=VOCAB,
    embed_dim=2,
    tower_hidden=(3,),
    interaction=interaction,
    **kwargs,
  )


@functools.cache
def params_of(name, interaction, low_rank=0):
  model = model_of(name, interaction, cross=dict(low_rank=low_rank))
  init = jax.jit(functools.partial(model.init, train=False))
  return model, init(jax.random.key(0), FEATURES)['params']


@pytest.mark.parametrize('interaction', ['fm', 'dcn_v2'])
def test_the_backbone_takes_x_and_the_interaction(interaction):
  model, p = params_of('shared_bottom', interaction)
  embed = FeatureEmbedding(VOCAB, 2)
  x = np.asarray(
    embed.apply({'params': p['embed']}, FEATURES['dense'], FEATURES['sparse']),
    np.float64,
  )
  if interaction == 'fm':
    v = x[:, 2:].reshape(B, 3, 2)
    extra = 0.5 * (v.sum(1) ** 2 - (v**2).sum(1))
  else:
    layers = [
      (np.asarray(q['kernel']).T, np.asarray(q['bias']))
      for _, q in sorted(p['interaction']['cross'].items())
    ]
    extra = np_cross(x, layers)
  backbone = jax.jit(functools.partial(model.backbone.apply, train=False))
  z = backbone(
    {'params': p['backbone']},
    jnp.asarray(np.concatenate([x, extra], 1), jnp.float32),
  )
  towers = jax.jit(functools.partial(Towers(T, (3,)).apply, train=False))
  want = towers({'params': p['towers']}, z)
  apply = jax.jit(functools.partial(model.apply, train=False))
  got = apply({'params': p}, FEATURES)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert ('interaction' in p) == (interaction == 'dcn_v2')


def test_per_task_inputs_get_a_cross_network_per_task():
  model, p = params_of('single_task', 'dcn_v2', low_rank=1)
  kernel = p['interaction']['cross']['down_0']['kernel']
  assert kernel.shape == (T, 2 + 3 * 2, 1)
  assert not np.allclose(kernel[0], kernel[1])  # Separately drawn.
  apply = jax.jit(functools.partial(model.apply, train=False))
  assert apply({'params': p}, FEATURES).shape == (T, B)


@pytest.mark.parametrize(
  'name, vocab, interaction, words',
  [
    ('shared_bottom', (), 'fm', "interaction is 'fm' with sparse fields"),
    ('shared_bottom', VOCAB, 'cross', "interaction is 'cross', expected"),
    ('two_tower', VOCAB, 'dcn_v2', "interaction is 'dcn_v2' with model"),
  ],
)
def test_interaction_errors_are_one_line(name, vocab, interaction, words):
  kwargs = {'shared_bottom': dict(hidden=(4,))}.get(
    name, dict(user_features=('a',), item_features=('b', 'c'))
  )
  with pytest.raises(ConfigError, match=words) as e:
    make_model(
      name,
      kwargs,
      num_tasks=T,
      vocab_sizes=vocab,
      embed_dim=2,
      tower_hidden=(),
      interaction=interaction,
    )
  assert '\n' not in str(e.value)
