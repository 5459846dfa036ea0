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
from mtl.core.layers.embedding import Column
from mtl.core.weighting import WEIGHTINGS
from tests.core.architectures import test_contract as contract

SHAPES = [(510, 8), (7, 3), (3, 4, 5), (1024, 16)]
STDDEVS = [0.02, 0.5, 3**-0.5]


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


# Op by op an init is slow (one compile per op and shape, 5 s for this
# tiny MMoE). Its params are an embedding table (our embed_init), expert
# banks and gates vmapped over experts and tasks, and towers (flax's
# lecun_normal and zeros): jitted, every leaf the bits of op by op. The
# normal() of sequence encoders and two-tower interactions is tested above.
def test_a_models_jitted_init_equals_its_init_op_by_op():
  model = contract.model_of('mmoe', 2, 2)
  jitted, op_by_op = _state_params(
    model, contract.features(contract.batch_of(0, 2, 2))
  )
  _same(jitted, op_by_op)


def test_models_that_differ_only_in_a_columns_pooling_init_apart():
  """A Column compares as its int: the jitted init must not take one model's
  compiled program for another's (mtl/core/train_state.py keys it by repr).
  Keyed by equality, the transformer's init would return mean pooling's
  params, without the transformer's."""
  from tests.core import test_two_tower as tt

  mean = tt.model_of('bilinear')
  cols = tuple(
    Column(c, feature=c.feature, table=c.table, pooling='transformer_attn')
    if c.pooling
    else c
    for c in tt.COLUMNS
  )
  attn = mean.clone(vocab_sizes=cols)
  assert attn == mean  # What a cache keyed by equality would confuse.
  example = tt.features()
  for model in (mean, attn):
    state = train_state.init_train_state(
      model,
      optax.sgd(0.1),
      WEIGHTINGS['equal'](),
      example,
      num_tasks=2,
      key=jax.random.key(3),
    )
    declared = jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0), example
    )['params']
    assert jax.tree.structure(state.params) == jax.tree.structure(declared)
  assert 'attention_0' in str(jax.tree.structure(declared))
