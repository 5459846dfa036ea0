"""The wide part (Wide & Deep): numpy's linear model, zero init, defaults
that leave the model as it was, and a few training steps."""

import functools
import re
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from mtl.core import train_state, train_step
from mtl.core.layers.embedding import Column
from mtl.core.layers.wide import Wide, cross_bucket
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS
from mtl.errors import ConfigError
from mtl.shell import build, validate

B, T, BUCKETS = 6, 2, 13
FAST = {'xla_backend_optimization_level': 0}
# user (categorical), item (categorical), hist: a 3-long history of items
# looked up in the item table (id 0: padding).
COLUMNS = (
  Column(5, feature='user'),
  Column(7, feature='item'),
  *[Column(7, feature='hist', table='item', pooling='mean')] * 3,
)
NAMES = ('d0', 'd1', 'user', 'item', 'hist_0', 'hist_1', 'hist_2')
SPARSE = np.array(
  [
    [2, 3, 4, 0, 0],
    [3, 2, 2, 2, 5],
    [4, 6, 0, 0, 0],
    [1, 1, 3, 6, 0],
    [2, 3, 5, 4, 3],
    [0, 5, 6, 0, 2],  # Padding: the user, mid-history.
  ],
  np.int32,
)


def np_bucket(a, b, buckets):
  """The hash, written again in numpy's wrapping uint32 arithmetic."""
  with np.errstate(over='ignore'):
    u = np.uint32
    a, b = np.asarray(a).astype(u), np.asarray(b).astype(u)
    h = (a * u(0x9E3779B1)) ^ ((b + u(0x7F4A7C15)) * u(0x85EBCA77))
    h = (h ^ (h >> u(16))) * u(0x7FEB352D)
    h = (h ^ (h >> u(15))) * u(0x846CA68B)
    h = h ^ (h >> u(16))
  return (h % u(buckets)).astype(np.int64)


def random_params(params, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params
  )


def test_wide_logit_is_numpys_linear_model_with_padding_and_a_cross():
  wide = Wide(
    COLUMNS, T, NAMES[2:], crosses=(('user', 'item'),), cross_buckets=BUCKETS
  )
  dense = np.random.default_rng(1).normal(size=(B, 2)).astype(np.float32)
  params = wide.init(jax.random.key(0), dense, SPARSE)['params']
  assert all(not np.any(p) for p in jax.tree.leaves(params))  # Zero init.
  p = jax.tree.map(np.asarray, random_params(params))
  got = jax.jit(wide.apply, compiler_options=FAST)({'params': p}, dense, SPARSE)
  want = np.zeros((B, T)) + p['bias'] + dense @ p['dense']
  for r in range(B):
    u, i, hist = SPARSE[r, 0], SPARSE[r, 1], SPARSE[r, 2:]
    # Id 0 is padding in this layout: the last row's user adds nothing, nor
    # does its cross.
    want[r] += (u != 0) * p['ids_user'][u] + p['ids_item'][i]
    want[r] += sum(p['ids_hist'][h] for h in hist if h != 0)
    if u != 0:
      want[r] += p['cross_user_x_item'][np_bucket(u, i, BUCKETS)]
  assert got.shape == (T, B)
  np.testing.assert_allclose(got, want.T, rtol=1e-5, atol=1e-5)


def test_wide_plain_layout_counts_every_id_and_no_dense_term():
  vocab = (3, 4)  # One shared table: column s owns rows offset_s + id.
  sparse = np.array([[0, 0], [2, 3], [1, 0]], np.int32)
  dense = np.ones((3, 2), np.float32)
  wide = Wide(vocab, 1, ('a', 'b'), dense=False, crosses=(('b', 'a'),))
  params = wide.init(jax.random.key(0), dense, sparse)['params']
  assert set(params) == {'bias', 'ids_table', 'cross_b_x_a'}
  p = jax.tree.map(np.asarray, random_params(params, seed=2))
  want = [
    p['bias'][0]
    + p['ids_table'][a, 0]
    + p['ids_table'][3 + b, 0]
    + p['cross_b_x_a'][np_bucket(b, a, wide.cross_buckets), 0]
    for a, b in sparse
  ]
  got = wide.apply({'params': p}, dense, sparse)
  np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)


def test_cross_bucket_is_spread_and_in_range():
  a, b = np.meshgrid(np.arange(200), np.arange(200))
  got = np.asarray(cross_bucket(jnp.asarray(a), jnp.asarray(b), 97))
  np.testing.assert_array_equal(got, np_bucket(a, b, 97))
  counts = np.bincount(got.ravel(), minlength=97)
  assert counts.min() > 0.7 * 40000 / 97 and counts.max() < 1.3 * 40000 / 97


def shape_of(vocab=COLUMNS, names=NAMES):
  """What build.build reads of a Dataset (as mtl/shell/restore.py does)."""
  return types.SimpleNamespace(
    tasks=(Task('a'), Task('b')),
    vocab_sizes=vocab,
    dense_names=names[: len(names) - len(vocab)],
    sparse_names=names[len(names) - len(vocab) :],
  )


def features(seed=0):
  rng = np.random.default_rng(seed)
  return {
    'dense': rng.normal(size=(B, 2)).astype(np.float32),
    'sparse': SPARSE,
  }


def plain_model(name='mmoe', **keys):
  kwargs = {
    'mmoe': dict(num_experts=2, expert_hidden=(4,)),
    'shared_bottom': dict(hidden=(4,)),
    'esmm': dict(hidden=(4,)),
    'two_tower': dict(user_features=('user',), item_features=('item',)),
    'pepnet': dict(
      domain_features=('user',), hidden=(4,), gate_width=3
    ),  # Features by name, as two towers; its score does not factor.
  }[name]
  return make_model(
    name,
    kwargs,
    num_tasks=3 if name == 'esmm' else T,
    vocab_sizes=COLUMNS,
    embed_dim=2,
    tower_hidden=(3,),
    feature_names=NAMES,
    **keys,
  )


@functools.cache
def _apply(key):
  model = MODELS[key]
  return jax.jit(functools.partial(model.apply, train=False))


MODELS = {}


def logits(model, params):
  """The model's logits on features(1), one compile per model."""
  MODELS.setdefault(repr(model), model)
  return _apply(repr(model))({'params': params}, features(1))


def init(model, seed=0):
  """A real init, jitted (op by op, it compiles every op: 4x slower)."""
  fn = jax.jit(
    functools.partial(model.init, train=False), compiler_options=FAST
  )
  return fn(jax.random.key(seed), features())['params']


def test_defaults_build_the_model_of_before_bit_for_bit():
  config = common.base_config('mmoe', 'table')
  config.model.update(dict(num_experts=2, expert_hidden=(4,)))
  config.embedding.dim = 2
  config.towers.hidden = (3,)
  validate.check_config(config)
  model, _, _ = build.build(config, shape_of(), total_steps=1)
  before = plain_model()  # Built without the new keys.
  p, q = init(model), init(before)
  assert jax.tree.structure(p) == jax.tree.structure(q)
  assert set(p) == {'embed', 'backbone', 'towers'}
  jax.tree.map(np.testing.assert_array_equal, p, q)
  np.testing.assert_array_equal(logits(model, p), logits(before, q))


@pytest.mark.parametrize('name', ['mmoe', 'esmm', 'pepnet'])
def test_an_enabled_wide_part_starts_as_the_deep_model(name):
  on = plain_model(
    name, wide=dict(enabled=True, crosses=[['item', 'user']], cross_buckets=5)
  )
  p, q = init(on), init(plain_model(name))
  # One output per tower (ESMM: 2 towers, 3 outputs).
  assert p['wide']['bias'].shape == (2,)
  deep = {k: v for k, v in p.items() if k != 'wide'}
  jax.tree.map(np.testing.assert_array_equal, deep, q)
  np.testing.assert_array_equal(logits(on, p), logits(plain_model(name), q))
  # And its weights reach every output: the wide logits are added.
  p['wide']['bias'] = jnp.asarray([0.5, -1.0])
  moved, base = logits(on, p), logits(plain_model(name), q)
  if name != 'esmm':
    np.testing.assert_allclose(moved - base, [[0.5] * B, [-1.0] * B], 1e-6)
  else:  # ESMM: CTR, CVR, CTCVR = CTR * CVR derived from the two towers.
    assert np.all(np.abs(moved - base) > 1e-3)


@pytest.mark.parametrize(
  'keys, words',
  [
    (dict(wide=dict(enabled=True, crosses=[('user', 'hist')])), "'hist'"),
    (dict(wide=dict(enabled=True, crosses=[('user',)])), 'pair'),
    (dict(wide=dict(enabled=True, buckets=3)), 'wide.buckets'),
  ],
)
def test_wide_errors_name_the_key(keys, words):
  with pytest.raises(ConfigError, match=words) as e:
    plain_model(**keys)
  assert '\n' not in str(e.value)


def test_two_towers_refuse_a_wide_part():
  with pytest.raises(ConfigError, match='wide.enabled is True'):
    plain_model('two_tower', wide=dict(enabled=True))
  config = common.base_config('two_tower', 'table')
  config.model.update(dict(user_features=('a',), item_features=('b',)))
  config.towers.hidden = ()
  validate.check_config(config)
  config.wide.enabled = True
  with pytest.raises(ConfigError, match='wide.enabled is True'):
    validate.check_config(config)
  config.wide.enabled, config.interaction = False, 'fm'
  with pytest.raises(ConfigError, match="interaction is 'fm' with model"):
    validate.check_config(config)


@pytest.mark.parametrize(
  'key, value, words',
  [
    ('wide.enabled', 1, 'wide.enabled is 1 (an int), expected True or False'),
    ('wide.cross_buckets', 0, 'wide.cross_buckets is 0, expected >= 1'),
    ('wide.crosses', (('a', 'b', 'c'),), 'expected a pair'),
    ('wide.crosses', (('a', 2),), 'wide.crosses[0][1] is 2 (an int)'),
    ('interaction', 'dcn', "interaction 'dcn' is not one of none, fm, dcn_v2"),
    ('cross.num_layers', 0, 'cross.num_layers is 0, expected >= 1'),
    ('cross.low_rank', -1, 'cross.low_rank is -1, expected >= 0'),
  ],
)
def test_validate_checks_the_new_keys(key, value, words):
  values = common.base_config('mmoe', 'synthetic').to_dict()
  *section, name = key.split('.')
  node = values[section[0]] if section else values
  node[name] = value  # A new ConfigDict: any type goes.
  config = ml_collections.ConfigDict(values)
  with pytest.raises(ConfigError, match=re.escape(words)):
    validate.check_config(config)


def train(model, method='equal', steps=20):
  """Jitted steps on a learnable random task: the first and last total
  loss, the initial and the final state."""
  rng = np.random.default_rng(0)
  n = 64
  sparse = np.stack(
    [rng.integers(1, 5, n), rng.integers(1, 7, n)]
    + [rng.integers(0, 7, n) for _ in range(3)],
    1,
  ).astype(np.int32)
  dense = rng.normal(size=(n, 2)).astype(np.float32)
  signal = (sparse[:, 0] % 2 == 0) ^ (sparse[:, 1] > 3)
  batch = {
    'dense': dense,
    'sparse': sparse,
    'labels': np.stack([signal, ~signal]).astype(np.float32),
    'mask': np.ones((2, n), np.float32),
  }
  weighting = WEIGHTINGS[method]()
  tx = optax.adam(0.05)
  state = train_state.init_train_state(
    model,
    tx,
    weighting,
    train_step.features_of(batch),
    num_tasks=2,
    key=jax.random.key(0),
  )
  tasks = (Task('a'), Task('b'))
  step = jax.jit(
    train_step.make_train_step(
      model, tx, weighting, tasks, steps_per_epoch=steps
    ),
    compiler_options=FAST,
  )
  losses, start = [], state
  for _ in range(steps):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss'].sum()))
  assert np.all(np.isfinite(losses))
  return losses[0], losses[-1], start, state


def test_wide_and_deep_with_dcn_v2_trains_under_a_gram_method():
  """MGDA combines the per-task gradients of the shared group (backbone)
  from their Gram matrix; `wide` and `interaction` take the weighted sum."""
  model = plain_model(
    'shared_bottom',
    wide=dict(enabled=True, crosses=[('user', 'item')], cross_buckets=31),
    interaction='dcn_v2',
    cross=dict(num_layers=2, low_rank=2),
  )
  first, last, start, state = train(model, 'mgda')
  assert last < 0.5 * first
  # Both new collections learn: the gradient reaches them.
  assert np.abs(state.params['wide']['cross_user_x_item']).max() > 0.01
  moved = jax.tree.map(
    lambda a, b: np.abs(a - b).max(),
    state.params['interaction'],
    start.params['interaction'],
  )
  assert min(jax.tree.leaves(moved)) > 1e-3
