"""MLP, ExpertBank, Gates and FeatureEmbedding against numpy oracles."""

import functools

import jax
import numpy as np
import pytest

from mtl.core.layers import (
  MLP,
  ExpertBank,
  FeatureEmbedding,
  Gate,
  Gates,
  GroupedExpertBank,
)

B, D = 8, 5
# Compile time dominates on CPU, mostly spent optimising init's RNG code.
FAST_COMPILE = {'xla_backend_optimization_level': 0}


def jit(fn):
  return jax.jit(fn, compiler_options=FAST_COMPILE)


def run(module, *args, rngs=None, **kwargs):
  """(params, output) of a real init then an apply, each compiled once."""
  init = jit(functools.partial(module.init, **kwargs))
  params = init(jax.random.key(1), *args)['params']
  apply = jit(
    lambda p, *a: module.apply({'params': p}, *a, rngs=rngs, **kwargs)
  )
  return params, np.asarray(apply(params, *args))


def np_mlp(layers, x):
  """Oracle: layers is a list of (kernel, bias); ReLU after every layer."""
  x = np.asarray(x, np.float64)
  for kernel, bias in layers:
    x = np.maximum(x @ np.asarray(kernel) + np.asarray(bias), 0.0)
  return x


def np_softmax(a):
  a = np.asarray(a, np.float64)
  e = np.exp(a - a.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def layers_of(mlp_params, *index):
  """The (kernel, bias) list of one MLP, sliced out of stacked params."""
  return [
    (np.asarray(layer['kernel'])[index], np.asarray(layer['bias'])[index])
    for layer in (mlp_params[f'Dense_{i}'] for i in range(len(mlp_params)))
  ]


def rand(*shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_mlp_matches_numpy():
  x = rand(B, D)
  params, got = run(MLP((4, 3)), x, train=False)
  want = np_mlp(layers_of(params), x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mlp_dropout_only_when_training():
  x = np.abs(rand(B, D)) + 1.0
  mlp = MLP((16,), dropout=0.5)
  # No 'dropout' rng is given: evaluation must not ask for one.
  params, eval_out = run(mlp, x, train=False)
  train_out = np.asarray(
    jit(
      lambda p, x: mlp.apply(
        {'params': p}, x, train=True, rngs={'dropout': jax.random.key(2)}
      )
    )(params, x)
  )
  kept = train_out != 0
  assert 0 < kept.mean() < 1
  np.testing.assert_allclose(train_out[kept], 2.0 * eval_out[kept], rtol=1e-5)


def test_expert_bank_equals_each_expert_run_separately():
  x = rand(B, D)
  params, got = run(ExpertBank(3, (4, 6)), x, train=False)
  kernels = np.asarray(params['mlp']['Dense_0']['kernel'])
  assert kernels.shape == (3, D, 4)
  assert got.shape == (3, B, 6)
  for e in range(3):
    want = np_mlp(layers_of(params['mlp'], e), x)
    np.testing.assert_allclose(got[e], want, rtol=1e-5, atol=1e-6)
  # Each expert drew its own initialisation.
  assert not np.allclose(kernels[0], kernels[1])


def test_expert_bank_per_expert_inputs():
  x = rand(3, B, D)
  bank = ExpertBank(3, (4,), per_expert_inputs=True)
  params, got = run(bank, x, train=False)
  for e in range(3):
    want = np_mlp(layers_of(params['mlp'], e), x[e])
    np.testing.assert_allclose(got[e], want, rtol=1e-5, atol=1e-6)


def test_expert_bank_dropout_masks_differ_between_experts():
  x = np.abs(rand(B, D)) + 1.0
  bank = ExpertBank(2, (64,), dropout=0.5)
  _, out = run(bank, x, train=True, rngs={'dropout': jax.random.key(3)})
  masks = out != 0
  assert (masks[0] != masks[1]).any()


def test_empty_expert_bank_has_no_params():
  x = rand(B, D)
  out, variables = ExpertBank(0, (4,)).init_with_output(
    jax.random.key(0), x, train=False
  )
  assert out.shape == (0, B, 4)
  assert not jax.tree.leaves(variables)


def test_grouped_expert_bank_matches_numpy():
  x = rand(2, B, D)
  params, got = run(GroupedExpertBank(2, 3, (4,)), x, train=False)
  assert params['bank']['mlp']['Dense_0']['kernel'].shape == (2, 3, D, 4)
  assert got.shape == (2, 3, B, 4)
  for g in range(2):
    for e in range(3):
      want = np_mlp(layers_of(params['bank']['mlp'], g, e), x[g])
      np.testing.assert_allclose(got[g, e], want, rtol=1e-5, atol=1e-6)


def test_gate_is_softmax_of_linear_map():
  x = rand(B, D)
  params, got = run(Gate(3), x)
  assert set(params) == {'kernel'}
  want = np_softmax(x @ np.asarray(params['kernel']))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('per_gate_inputs', [False, True])
def test_gates_match_numpy(per_gate_inputs):
  x = rand(2, B, D) if per_gate_inputs else rand(B, D)
  params, got = run(Gates(2, 3, per_gate_inputs=per_gate_inputs), x)
  kernel = np.asarray(params['gate']['kernel'])
  assert kernel.shape == (2, D, 3)
  assert got.shape == (2, B, 3)
  for g in range(2):
    xg = x[g] if per_gate_inputs else x
    want = np_softmax(xg @ kernel[g])
    np.testing.assert_allclose(got[g], want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(kernel[0], kernel[1])


def test_feature_embedding_matches_numpy_gather():
  vocab_sizes, dim = (3, 5, 2), 4
  rng = np.random.default_rng(0)
  dense = rng.normal(size=(B, 2)).astype(np.float32)
  sparse = np.stack(
    [rng.integers(0, v, size=B) for v in vocab_sizes], axis=1
  ).astype(np.int32)
  params, got = run(FeatureEmbedding(vocab_sizes, dim), dense, sparse)
  table = np.asarray(params['table'])
  assert table.shape == (sum(vocab_sizes), dim)

  pieces, start = [dense], 0
  for s, vocab in enumerate(vocab_sizes):
    own_rows = table[start : start + vocab]
    pieces.append(own_rows[sparse[:, s]])
    start += vocab
  want = np.concatenate(pieces, axis=1)
  assert got.shape == (B, 2 + len(vocab_sizes) * dim)
  np.testing.assert_array_equal(got, want)


def test_feature_embedding_features_do_not_share_rows():
  dense = np.zeros((1, 0), np.float32)
  sparse = np.zeros((1, 2), np.int32)
  _, x = run(FeatureEmbedding((3, 3), 2), dense, sparse)
  assert not np.allclose(x[0, :2], x[0, 2:])


def test_feature_embedding_without_sparse_features_passes_dense():
  dense = rand(B, 3)
  sparse = np.zeros((B, 0), np.int32)
  x, variables = FeatureEmbedding((), 4).init_with_output(
    jax.random.key(0), dense, sparse
  )
  np.testing.assert_array_equal(x, dense)
  assert not jax.tree.leaves(variables)


def test_feature_embedding_rejects_wrong_number_of_sparse_columns():
  emb = FeatureEmbedding((3, 3), 2)
  with pytest.raises(ValueError, match=r'expected \[B, 2\]'):
    emb.init(
      jax.random.key(0),
      np.zeros((B, 1), np.float32),
      np.zeros((B, 3), np.int32),
    )
