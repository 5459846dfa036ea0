"""MLP, ExpertBank, Gates and FeatureEmbedding against numpy oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.layers import (
  MLP,
  ExpertBank,
  FeatureEmbedding,
  Gate,
  Gates,
  GroupedExpertBank,
)

B, D = 8, 5


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
  n = len(mlp_params)
  return [
    (mlp_params[f'Dense_{i}']['kernel'][index],
     mlp_params[f'Dense_{i}']['bias'][index])
    for i in range(n)
  ]  # fmt: skip


def rand(*shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def test_mlp_matches_numpy():
  x = rand(B, D)
  mlp = MLP((4, 3))
  params = mlp.init(jax.random.key(1), x, train=False)['params']
  got = mlp.apply({'params': params}, x, train=False)
  np.testing.assert_allclose(
    got, np_mlp(layers_of(params), x), rtol=1e-5, atol=1e-6
  )


def test_mlp_dropout_only_when_training():
  x = jnp.abs(rand(B, D)) + 1.0
  mlp = MLP((16,), dropout=0.5)
  params = mlp.init(jax.random.key(1), x, train=False)
  # No 'dropout' rng is given: evaluation must not ask for one.
  eval_out = mlp.apply(params, x, train=False)
  train_out = mlp.apply(
    params, x, train=True, rngs={'dropout': jax.random.key(2)}
  )
  kept = np.asarray(train_out) != 0
  assert 0 < kept.mean() < 1
  np.testing.assert_allclose(
    np.asarray(train_out)[kept], 2.0 * np.asarray(eval_out)[kept], rtol=1e-5
  )


def test_expert_bank_equals_each_expert_run_separately():
  x = rand(B, D)
  bank = ExpertBank(3, (4, 6))
  params = bank.init(jax.random.key(1), x, train=False)['params']
  assert params['mlp']['Dense_0']['kernel'].shape == (3, D, 4)
  got = np.asarray(bank.apply({'params': params}, x, train=False))
  assert got.shape == (3, B, 6)
  for e in range(3):
    want = np_mlp(layers_of(params['mlp'], e), x)
    np.testing.assert_allclose(got[e], want, rtol=1e-5, atol=1e-6)
  # Each expert drew its own initialisation.
  kernels = np.asarray(params['mlp']['Dense_0']['kernel'])
  assert not np.allclose(kernels[0], kernels[1])


def test_expert_bank_per_expert_inputs():
  x = rand(3, B, D)
  bank = ExpertBank(3, (4,), per_expert_inputs=True)
  params = bank.init(jax.random.key(1), x, train=False)['params']
  got = np.asarray(bank.apply({'params': params}, x, train=False))
  for e in range(3):
    want = np_mlp(layers_of(params['mlp'], e), x[e])
    np.testing.assert_allclose(got[e], want, rtol=1e-5, atol=1e-6)


def test_expert_bank_dropout_masks_differ_between_experts():
  x = jnp.abs(rand(B, D)) + 1.0
  bank = ExpertBank(2, (64,), dropout=0.5)
  params = bank.init(jax.random.key(1), x, train=False)
  out = bank.apply(params, x, train=True, rngs={'dropout': jax.random.key(3)})
  masks = np.asarray(out) != 0
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
  bank = GroupedExpertBank(2, 3, (4,))
  params = bank.init(jax.random.key(1), x, train=False)['params']
  assert params['bank']['mlp']['Dense_0']['kernel'].shape == (2, 3, D, 4)
  got = np.asarray(bank.apply({'params': params}, x, train=False))
  assert got.shape == (2, 3, B, 4)
  for g in range(2):
    for e in range(3):
      want = np_mlp(layers_of(params['bank']['mlp'], g, e), x[g])
      np.testing.assert_allclose(got[g, e], want, rtol=1e-5, atol=1e-6)


def test_gate_is_softmax_of_linear_map():
  x = rand(B, D)
  gate = Gate(3)
  params = gate.init(jax.random.key(1), x)['params']
  assert set(params) == {'kernel'}
  got = gate.apply({'params': params}, x)
  want = np_softmax(np.asarray(x) @ np.asarray(params['kernel']))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('per_gate_inputs', [False, True])
def test_gates_match_numpy(per_gate_inputs):
  x = rand(2, B, D) if per_gate_inputs else rand(B, D)
  gates = Gates(2, 3, per_gate_inputs=per_gate_inputs)
  params = gates.init(jax.random.key(1), x)['params']
  kernel = np.asarray(params['gate']['kernel'])
  assert kernel.shape == (2, D, 3)
  got = np.asarray(gates.apply({'params': params}, x))
  assert got.shape == (2, B, 3)
  for g in range(2):
    xg = x[g] if per_gate_inputs else x
    want = np_softmax(np.asarray(xg) @ kernel[g])
    np.testing.assert_allclose(got[g], want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(kernel[0], kernel[1])


def test_feature_embedding_matches_numpy_gather():
  vocab_sizes, dim = (3, 5, 2), 4
  rng = np.random.default_rng(0)
  dense = rng.normal(size=(B, 2)).astype(np.float32)
  sparse = np.stack(
    [rng.integers(0, v, size=B) for v in vocab_sizes], axis=1
  ).astype(np.int32)
  emb = FeatureEmbedding(vocab_sizes, dim)
  params = emb.init(jax.random.key(0), dense, sparse)['params']
  table = np.asarray(params['table'])
  assert table.shape == (sum(vocab_sizes), dim)
  got = np.asarray(emb.apply({'params': params}, dense, sparse))

  pieces, start = [dense], 0
  for s, vocab in enumerate(vocab_sizes):
    own_rows = table[start : start + vocab]
    pieces.append(own_rows[sparse[:, s]])
    start += vocab
  want = np.concatenate(pieces, axis=1)
  assert got.shape == (B, 2 + len(vocab_sizes) * dim)
  np.testing.assert_array_equal(got, want)


def test_feature_embedding_features_do_not_share_rows():
  emb = FeatureEmbedding((3, 3), 2)
  dense = np.zeros((1, 0), np.float32)
  sparse = np.zeros((1, 2), np.int32)
  x = np.asarray(emb.init_with_output(jax.random.key(0), dense, sparse)[0])
  assert not np.allclose(x[0, :2], x[0, 2:])


def test_feature_embedding_without_sparse_features_passes_dense():
  dense = np.asarray(rand(B, 3))
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
