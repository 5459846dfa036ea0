"""A model's init is jitted (mtl/core/train_state.py) and gives the bits of
flax's initializers run op by op: the oracle everywhere here is flax's own
initializer (or the model's init) called op by op."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl.core import train_state
from mtl.core.layers import initializers
from mtl.core.layers.embedding import Column, FeatureEmbedding
from mtl.core.weighting import WEIGHTINGS
from tests.architectures import test_contract as contract

SHAPES = [(510, 8), (7, 3), (3, 4, 5), (1024, 16)]
STDDEVS = [0.02, 0.5, 4**-0.5]


def _keys(n):
  return jax.random.split(jax.random.key(7), n)


def _same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('shape', SHAPES)
def test_embed_init_is_flax_default_op_by_op_jitted_and_vmapped(shape):
  keys = _keys(3)
  flax_init = nn.linear.default_embed_init
  want = [flax_init(k, shape, jnp.float32) for k in keys]
  ours = initializers.embed_init
  _same([ours(k, shape) for k in keys], want)
  jitted = jax.jit(functools.partial(ours, shape=shape))
  _same([jitted(k) for k in keys], want)
  _same(jax.vmap(jitted)(keys), jnp.stack(want))
  # And it is a real init: standard deviation 1 / sqrt(fan_in), fan_in
  # all but the first (out) axis.
  fan_in = np.prod(shape) / shape[0]
  assert abs(np.std(np.asarray(want[0])) * np.sqrt(fan_in) - 1) < 0.2


@pytest.mark.parametrize('stddev', STDDEVS)
def test_normal_is_flax_normal_op_by_op_jitted_and_vmapped(stddev):
  keys = _keys(3)
  for shape in [(16,), *SHAPES]:
    want = [nn.initializers.normal(stddev)(k, shape) for k in keys]
    ours = initializers.normal(stddev)
    _same([ours(k, shape) for k in keys], want)
    jitted = jax.jit(functools.partial(ours, shape=shape))
    _same([jitted(k) for k in keys], want)
    _same(jax.vmap(jitted)(keys), jnp.stack(want))


def _state_params(model, example):
  state = train_state.init_train_state(
    model,
    optax.adam(1e-3),
    WEIGHTINGS['equal'](),
    example,
    num_tasks=2,
    key=jax.random.key(3),
  )
  init_key, _ = jax.random.split(jax.random.key(3))
  return state.params, model.init(init_key, example, train=False)['params']


# Op by op an init is slow (one compile per op and shape): two
# architectures between them hold every kind of param of the others
# (embedding table, expert banks and gates vmapped over experts and tasks,
# towers); two-tower models are in the next test.
@pytest.mark.parametrize('name', ['mmoe', 'ple'])
def test_architectures_jitted_init_equals_op_by_op(name):
  model = contract.model_of(name, 2, 2)
  jitted, op_by_op = _state_params(
    model, contract.features(contract.batch_of(0, 2, 2))
  )
  _same(jitted, op_by_op)


def test_sequence_encoders_and_two_tower_jitted_init_equals_op_by_op():
  from tests import test_two_tower as tt

  # The bilinear interaction's init is a normal(1 / sqrt(width)).
  jitted, op_by_op = _state_params(tt.model_of('bilinear'), tt.features())
  _same(jitted, op_by_op)
  # An attention-pooled transformer: normal(0.02) positions and query.
  columns = (
    Column(9, feature='item'),
    *[Column(9, feature='history', table='item', pooling='transformer_attn')]
    * 3,
  )
  layer = FeatureEmbedding(columns, 4)
  rng = np.random.default_rng(0)
  dense = rng.normal(size=(6, 2)).astype(np.float32)
  sparse = rng.integers(0, 5, (6, len(columns))).astype(np.int32)
  key = jax.random.key(5)
  op_by_op = layer.init(key, dense, sparse)
  _same(jax.jit(layer.init)(key, dense, sparse), op_by_op)
  names = {
    '/'.join(str(p.key) for p in path)
    for path, _ in jax.tree_util.tree_leaves_with_path(op_by_op)
  }
  assert any('positions' in n for n in names), names  # normal(0.02) ran.
  assert any('query' in n for n in names), names
