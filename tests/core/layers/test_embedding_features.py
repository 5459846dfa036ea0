"""Per-feature embedding tables and pooled sequences:
mtl/core/layers/embedding.py, checked against numpy.

Speed: init and apply run jitted, one program per module and input shape,
shared by the tests (op by op, every op compiled on its own per shape)."""

import functools

import jax
import numpy as np
import pytest

from mtl.core.layers import embedding as emb_lib
from mtl.core.layers.embedding import Column, FeatureEmbedding
from mtl.core.model import make_model

DIM = 4
# The parameter-free encoders (the learned ones: tests/core/test_sequence.py).
POOLS = sorted(
  n for n, f in emb_lib.SEQUENCE_ENCODERS.items() if not isinstance(f, type)
)


def layout():
  """user (own table, dim 3), item (own), history (item's table, mean, 5
  columns), tags (own table, sum, 3 columns)."""
  return (
    Column(7, feature='user', dim=3),
    Column(11, feature='item'),
    *[Column(11, feature='history', table='item', pooling='mean')] * 5,
    *[Column(6, feature='tags', pooling='sum')] * 3,
  )


@functools.cache
def _embedding(vocab_sizes=None):
  """FeatureEmbedding(vocab_sizes or layout(), DIM)'s jitted init (key 0)
  and apply."""
  module = FeatureEmbedding(vocab_sizes or layout(), DIM)
  init = jax.jit(lambda d, s: module.init(jax.random.key(0), d, s)['params'])
  apply = jax.jit(lambda p, d, s: module.apply({'params': p}, d, s))
  return init, apply


_encoders = {name: jax.jit(emb_lib.SEQUENCE_ENCODERS[name]) for name in POOLS}


def batch(rng, n=6):
  sparse = np.concatenate(
    [
      rng.integers(1, 7, (n, 1)),
      rng.integers(1, 11, (n, 1)),
      rng.integers(0, 11, (n, 5)),
      rng.integers(0, 6, (n, 3)),
    ],
    axis=1,
  ).astype(np.int32)
  sparse[0, 2:7] = 0  # an empty history
  sparse[1, 7:] = 0  # empty tags
  dense = rng.normal(size=(n, 2)).astype(np.float32)
  return dense, sparse


def numpy_embedding(params, dense, sparse):
  user, item, tags = (np.asarray(params[k]) for k in ('user', 'item', 'tags'))
  hist_ids, tag_ids = sparse[:, 2:7], sparse[:, 7:]
  out = []
  for b in range(len(dense)):
    h = [item[i] for i in hist_ids[b] if i != 0]
    t = [tags[i] for i in tag_ids[b] if i != 0]
    out.append(
      np.concatenate(
        [
          dense[b],
          user[sparse[b, 0]],
          item[sparse[b, 1]],
          np.mean(h, 0) if h else np.zeros(DIM),
          np.sum(t, 0) if t else np.zeros(DIM),
        ]
      )
    )
  return np.stack(out)


def test_one_table_per_feature_shared_by_history_pooled_as_numpy():
  rng = np.random.default_rng(0)
  dense, sparse = batch(rng)
  init, apply = _embedding()
  params = init(dense, sparse)
  assert {k: v.shape for k, v in params.items()} == {
    'user': (7, 3),
    'item': (11, DIM),
    'tags': (6, DIM),
  }
  x = apply(params, dense, sparse)
  assert x.shape == (6, 2 + 3 + DIM * 3)
  np.testing.assert_allclose(
    x, numpy_embedding(params, dense, sparse), rtol=1e-6, atol=1e-6
  )


def test_padding_never_leaks():
  """Changing what sits at padded positions (the padding rows of every
  table, and the embeddings an encoder is given there) changes nothing."""
  rng = np.random.default_rng(1)
  dense, sparse = batch(rng)
  init, apply = _embedding()
  params = jax.device_get(init(dense, sparse))
  x = apply(params, dense, sparse)
  noisy = {k: v.copy() for k, v in params.items()}
  for k, v in noisy.items():
    v[0] = 100.0 + k.__len__()
  np.testing.assert_array_equal(x, apply(noisy, dense, sparse))
  e = rng.normal(size=(4, 5, DIM)).astype(np.float32)
  mask = rng.random((4, 5)) < 0.5
  mask[0] = False
  junk = np.where(mask[..., None], e, 1e6 * np.sign(e) + 3.0)
  junk = junk.astype(np.float32)
  for name in POOLS:  # Learned encoders: tests/core/test_sequence.py.
    encode = _encoders[name]
    np.testing.assert_allclose(
      encode(e, mask), encode(junk, mask), rtol=1e-6, err_msg=name
    )


@pytest.mark.parametrize('name', POOLS)
def test_encoders_against_numpy(name):
  rng = np.random.default_rng(2)
  e = rng.normal(size=(5, 7, 3)).astype(np.float32)
  mask = rng.random((5, 7)) < 0.4
  mask[0] = False
  got = np.asarray(_encoders[name](e, mask))
  for b in range(5):
    kept = e[b][mask[b]]
    want = (
      np.zeros(3)
      if not len(kept)
      else kept.mean(0)
      if name == 'mean'
      else kept.sum(0)
    )
    np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)


def test_plain_vocab_sizes_keep_the_one_shared_table():
  rng = np.random.default_rng(3)
  sparse = rng.integers(0, 5, (4, 3)).astype(np.int32)
  dense = np.zeros((4, 1), np.float32)
  init, apply = _embedding((5, 6, 7))
  params = init(dense, sparse)
  assert {k: v.shape for k, v in params.items()} == {'table': (18, DIM)}
  table = np.asarray(params['table'])
  offsets = (0, 5, 11)
  rows = [table[sparse[:, s] + offsets[s]] for s in range(3)]
  want = np.concatenate([dense, *rows], axis=1)
  np.testing.assert_allclose(apply(params, dense, sparse), want, rtol=1e-6)


@pytest.mark.parametrize('model_name', ['mmoe', 'single_task'])
def test_every_architecture_takes_sequence_features(model_name):
  """The model embeds per feature (vmapped per task for single-task)."""
  rng = np.random.default_rng(4)
  dense, sparse = batch(rng)
  model = make_model(
    model_name,
    {},
    num_tasks=2,
    vocab_sizes=layout(),
    embed_dim=DIM,
    tower_hidden=(8,),
  )
  features = {'dense': dense, 'sparse': sparse}
  init = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))
  params = jax.device_get(init(features)['params'])
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))
  logits = apply(params, features)
  assert logits.shape == (2, 6) and np.isfinite(logits).all()

  def padded(p, v):
    if p[0].key == 'embed' and p[-1].key in ('item', 'tags'):
      v = v.copy()
      v[..., 0, :] = 5.0
    return v

  pad = jax.tree_util.tree_map_with_path(padded, params)
  np.testing.assert_allclose(logits, apply(pad, features), rtol=1e-6)


def test_inconsistent_layouts_fail():
  with pytest.raises(ValueError, match='one layout'):
    emb_lib.feature_groups((Column(3, feature='a'), 4), DIM)
  with pytest.raises(ValueError, match='no pooling'):
    emb_lib.feature_groups((Column(3, feature='a'),) * 2, DIM)
  with pytest.raises(ValueError, match='rows, dim'):
    emb_lib.feature_groups(
      (Column(3, feature='a'), Column(4, feature='b', table='a')), DIM
    )


def test_column_is_its_size_and_pickles():
  import pickle

  c = Column(9, feature='h', table='item', pooling='mean', dim=2)
  assert c == 9 and int(c) + 1 == 10
  back = pickle.loads(pickle.dumps(c))
  assert (back, back.feature, back.table, back.pooling, back.dim) == (
    9,
    'h',
    'item',
    'mean',
    2,
  )


def test_padding_and_unseen_id_rows_start_at_zero():
  """Per-feature tables: rows 0 (padding) and 1 (out of vocabulary) are zero
  at init, the rest flax's default init drawn from the same key; the shared
  table of plain vocab sizes is flax's default everywhere."""
  dense, sparse = batch(np.random.default_rng(0))
  init, apply = _embedding()
  params = init(dense, sparse)
  for name, table in params.items():
    table = np.asarray(table)
    np.testing.assert_array_equal(table[:2], 0.0, err_msg=name)
    assert np.all(np.abs(table[2:]).sum(1) > 0), name
  shared = _embedding((5, 6))[0](dense[:, :1], sparse[:, :2])['table']
  assert np.all(np.abs(np.asarray(shared)).sum(1) > 0)
  # An unseen item (id 1) is embedded as the zero vector.
  sparse = sparse.copy()
  sparse[0, 1] = 1
  x = apply(params, dense, sparse)
  item = slice(dense.shape[1] + 3, dense.shape[1] + 3 + DIM)  # after user
  np.testing.assert_array_equal(np.asarray(x)[0, item], 0.0)
