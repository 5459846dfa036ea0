"""Sequence encoders: mtl/core/layers/sequence.py.

Oracles: each encoder written again in float64 numpy from its paper's
equations (and flax's cell equations), run item by item over the valid
positions only; padding invariance by changing the padded positions'
embeddings (and the padding row of the table) and comparing outputs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.layers import sequence
from mtl.core.layers.embedding import (
  SEQUENCE_ENCODERS,
  Column,
  FeatureEmbedding,
)
from mtl.errors import ConfigError

B, L, D = 4, 5, 4
# Row 0 full, 1 a prefix, 2 empty, 3 a hole in the middle (any mask works).
MASK = np.array(
  [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 1, 1, 0]], bool
)


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(B, L, D)).astype(np.float32)
  query = rng.normal(size=(B, D)).astype(np.float32)
  return emb, query


FAST = {'xla_backend_optimization_level': 0}


def run(name, emb, query, mask=MASK, params=None):
  """(output, params) of a fresh encoder (or of `params`), compiled fast."""
  module = sequence.ENCODERS[name]()
  if params is None:
    params = jax.jit(module.init, compiler_options=FAST)(
      jax.random.key(1), emb, mask, query
    )
  out = jax.jit(module.apply, compiler_options=FAST)(params, emb, mask, query)
  return np.asarray(out), params


@functools.cache
def result(name):
  """(output, params) of `name` on inputs(0) and MASK, computed once."""
  emb, query = inputs()
  return run(name, emb, query)


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def np_params(params):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), params['params'])


def test_registered_with_mean_and_sum():
  assert set(SEQUENCE_ENCODERS) >= {'mean', 'sum', *sequence.ENCODERS}
  from mtl.data import schema

  assert set(schema.POOLING) == set(SEQUENCE_ENCODERS)


@pytest.mark.parametrize('name', sorted(sequence.ENCODERS))
def test_padding_never_leaks(name):
  emb, query = inputs()
  out, params = result(name)
  noise = np.random.default_rng(9).normal(size=emb.shape) * 100
  changed = np.where(MASK[..., None], emb, noise).astype(np.float32)
  out2, _ = run(name, changed, query, params=params)
  np.testing.assert_array_equal(out, out2)
  np.testing.assert_array_equal(out[2], 0.0)  # Empty: zeros.
  assert np.isfinite(out).all() and np.abs(out[0]).sum() > 0


def test_din_matches_numpy():
  emb, query = inputs()
  out, params = result('din')
  p = np_params(params)
  e, c = emb.astype(np.float64), np.broadcast_to(query[:, None], emb.shape)
  u = np.concatenate([e, c, e - c, e * c], -1)
  hdn = u @ p['Dense_0']['kernel'] + p['Dense_0']['bias']
  hdn = np.where(hdn >= 0, hdn, p['PReLU_0']['negative_slope'] * hdn)
  a = hdn @ p['score']['kernel'] + p['score']['bias']  # [B, L, 1]
  want = np.sum(np.where(MASK[..., None], a * e, 0), 1)  # no softmax
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_din_needs_a_candidate():
  emb, _ = inputs()
  with pytest.raises(ConfigError, match='din'):
    sequence.DIN().init(jax.random.key(0), emb, MASK, None)


def _np_gru(p, xs):
  h = np.zeros(D)
  for x in xs:  # flax GRUCell's equations.
    r = sigmoid(x @ p['ir']['kernel'] + p['ir']['bias'] + h @ p['hr']['kernel'])
    z = sigmoid(x @ p['iz']['kernel'] + p['iz']['bias'] + h @ p['hz']['kernel'])
    n = np.tanh(
      x @ p['in']['kernel']
      + p['in']['bias']
      + r * (h @ p['hn']['kernel'] + p['hn']['bias'])
    )
    h = (1 - z) * n + z * h
  return h


def _np_lstm(p, xs):
  h, c = np.zeros(D), np.zeros(D)
  for x in xs:
    gate = {
      k: x @ p[f'i{k}']['kernel']
      + h @ p[f'h{k}']['kernel']
      + p[f'h{k}']['bias']
      for k in 'ifgo'
    }
    c = sigmoid(gate['f']) * c + sigmoid(gate['i']) * np.tanh(gate['g'])
    h = sigmoid(gate['o']) * np.tanh(c)
  return h


@pytest.mark.parametrize(
  ('name', 'oracle'), [('gru', _np_gru), ('lstm', _np_lstm)]
)
def test_recurrent_matches_numpy_over_the_valid_items(name, oracle):
  emb, _ = inputs()
  out, params = result(name)
  p = np_params(params)
  cell = next(iter(p))  # GRUCell_0 / OptimizedLSTMCell_0
  for b in range(B):
    xs = emb[b][MASK[b]].astype(np.float64)
    want = oracle(p[cell], xs) if len(xs) else np.zeros(D)
    np.testing.assert_allclose(out[b], want, rtol=1e-5, atol=1e-5)


def _layer_norm(x, p):
  mu = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * p['scale'] + p['bias']


def _np_sasrec(p, x, query, pool):
  """One sequence's valid items x [n, D] (time order), positions given."""
  n = len(x)
  h = x * np.sqrt(D) + p['positions'][:n]
  q = _layer_norm(h, p['attention_norm_0'])
  a = p['attention_0']
  qq = q @ a['query']['kernel'][:, 0] + a['query']['bias'][0]
  kk = h @ a['key']['kernel'][:, 0] + a['key']['bias'][0]
  vv = h @ a['value']['kernel'][:, 0] + a['value']['bias'][0]
  logits = qq @ kk.T / np.sqrt(D)
  logits = np.where(np.tril(np.ones((n, n), bool)), logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  h = q + (w @ vv) @ a['out']['kernel'][0] + a['out']['bias']
  f = _layer_norm(h, p['ffn_norm_0'])
  f = np.maximum(f @ p['ffn_in_0']['kernel'] + p['ffn_in_0']['bias'], 0)
  h = h + f @ p['ffn_out_0']['kernel'] + p['ffn_out_0']['bias']
  h = _layer_norm(h, p['out_norm'])
  if pool == 'last':
    return h[-1]
  s = h @ query / np.sqrt(D)
  s = np.exp(s - s.max())
  return (s / s.sum()) @ h


@pytest.mark.parametrize('name', ['transformer', 'transformer_attn'])
def test_transformer_matches_numpy_sasrec(name):
  emb, query = inputs()
  mask = MASK[:3]  # Contiguous prefixes: positions 0..n-1 are the items.
  out, params = run(name, emb[:3], query[:3], mask=mask)
  p = np_params(params)
  pool = 'last' if name == 'transformer' else 'attention'
  for b in range(2):
    x = emb[b][mask[b]].astype(np.float64)
    want = _np_sasrec(p, x, query[b].astype(np.float64), pool)
    np.testing.assert_allclose(out[b], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', ['din', 'gru', 'transformer_attn'])
def test_in_the_embedding_the_padding_row_never_leaks(name):
  """A history pooled by `name` against the item feature (its candidate):
  the table's padding row 0 may hold anything."""
  cols = (
    *[Column(9, feature='history', table='item', pooling=name)] * L,
    Column(9, feature='item'),
  )
  layer = FeatureEmbedding(cols, D)
  sparse = np.array(
    [[3, 4, 5, 0, 0, 2], [0, 0, 0, 0, 0, 7], [8, 0, 0, 0, 0, 7]], np.int32
  )
  dense = np.zeros((3, 1), np.float32)
  v = jax.jit(layer.init, compiler_options=FAST)(
    jax.random.key(0), dense, sparse
  )
  assert set(v['params']) == {'item', 'encode_history'}
  apply = jax.jit(layer.apply, compiler_options=FAST)
  out = apply(v, dense, sparse)
  v2 = jax.tree.map(lambda a: a, v)
  v2['params']['item'] = v['params']['item'].at[0].set(1e3)
  np.testing.assert_array_equal(out, apply(v2, dense, sparse))
  # The candidate matters for din and transformer_attn only.
  other = sparse.copy()
  other[:, -1] = 1
  moved = np.abs(np.asarray(apply(v, dense, other) - out))[:, 1:-D]
  uses_candidate = name in ('din', 'transformer_attn')
  assert (moved[[0, 2]].max() > 0) == uses_candidate
  assert jnp.all(jnp.isfinite(out))
