"""Two towers: mtl/core/architectures/two_tower.py.

Oracles: the interaction forms in float64 numpy from the towers' outputs
and the params; the item tower alone against the item half of the full
model; the user tower against changes of the item columns (and back).
"""

import functools

import jax
import ml_collections
import numpy as np
import pytest

from configs import common
from mtl.core.architectures import two_tower
from mtl.core.layers.embedding import Column
from mtl.core.model import feature_layout, make_model
from mtl.errors import ConfigError
from mtl.shell import validate

L, D, N, T = 4, 3, 6, 2
FAST = {'xla_backend_optimization_level': 0}
DENSE = ('age', 'price')
COLUMNS = (
  Column(5, feature='user'),
  Column(7, feature='item'),
  *[Column(7, feature='history', table='item', pooling='mean')] * L,
)
NAMES = DENSE + ('user', 'item') + tuple(f'history[{j}]' for j in range(L))
USER, ITEM = ('age', 'user', 'history'), ('price', 'item')


def model_of(interaction='bilinear', name='two_tower', **kw):
  kwargs = dict(
    user_features=USER,
    item_features=ITEM,
    user_hidden=(5, 4),
    item_hidden=(6, 4),
    interaction=interaction,
    **kw,
  )
  return make_model(
    name,
    kwargs,
    num_tasks=T,
    vocab_sizes=COLUMNS,
    embed_dim=D,
    tower_hidden=(),
    feature_names=NAMES,
  )


def features(seed=0):
  rng = np.random.default_rng(seed)
  sparse = np.concatenate(
    [rng.integers(1, 5, (N, 1)), rng.integers(1, 7, (N, 1))]
    + [rng.integers(0, 7, (N, L))],
    axis=1,
  ).astype(np.int32)
  dense = rng.normal(size=(N, 2)).astype(np.float32)
  return {'dense': dense, 'sparse': sparse}


@functools.cache
def run(interaction, name='two_tower'):
  """(model, params, logits, h, g) on features(0)."""
  model = model_of(interaction, name)
  f = features()
  init = jax.jit(
    functools.partial(model.init, train=False), compiler_options=FAST
  )
  params = init(jax.random.key(0), f)['params']
  apply = jax.jit(
    functools.partial(model.apply, train=False, mutable=['intermediates']),
    compiler_options=FAST,
  )
  logits, state = apply({'params': params}, f)
  inter = state['intermediates']['backbone']
  h, g = inter['user'][0], inter['item'][0]
  as64 = lambda a: np.asarray(a, np.float64)
  return model, params, as64(logits), as64(h), as64(g)


def head(params):
  w = np.asarray(params['towers']['tower']['head']['kernel'], np.float64)
  b = np.asarray(params['towers']['tower']['head']['bias'], np.float64)
  return w[..., 0], b[:, 0]  # a_k [T, H], b_k [T]


@pytest.mark.parametrize('interaction', two_tower.INTERACTIONS[:3])
def test_interactions_match_numpy(interaction):
  _, params, logits, h, g = run(interaction)
  a, b = head(params)
  if interaction == 'dot':
    w = np.broadcast_to(np.eye(4), (T, 4, 4))
  else:
    w = np.asarray(params['backbone']['bilinear'], np.float64)
    w = np.broadcast_to(w, (T, 4, 4))
  # logit_k = h^T diag(a_k) W_k g + b_k
  want = np.einsum('bu,ku,kuv,bv->kb', h, a, w, g) + b[:, None]
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
  if interaction == 'bilinear':
    assert params['backbone']['bilinear'].shape == (T, 4, 4)


def test_mlp_interaction_feeds_h_g_and_their_product_to_the_towers():
  _, params, logits, h, g = run('mlp')
  a, b = head(params)  # towers.hidden = (): one Dense(1) per task.
  z = np.concatenate([h, g, h * g], -1)
  np.testing.assert_allclose(logits, a @ z.T + b[:, None], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', ['two_tower', 'two_tower_mmoe'])
def test_item_tower_alone_equals_the_item_half(name):
  interaction = 'mlp' if name == 'two_tower_mmoe' else 'bilinear'
  model, params, _, _, g = run(interaction, name)
  f = features()
  embed = jax.jit(
    functools.partial(two_tower.item_embeddings, model), compiler_options=FAST
  )
  alone = embed(params, f)
  np.testing.assert_allclose(np.asarray(alone), g, rtol=1e-6, atol=1e-6)
  # A catalogue has no user: the user columns may hold anything.
  cat = {'dense': f['dense'].copy(), 'sparse': f['sparse'].copy()}
  cat['dense'][:, 0] = 0.0
  cat['sparse'][:, [0, 2, 3, 4, 5]] = 0
  again = embed(params, cat)
  np.testing.assert_allclose(np.asarray(again), g, rtol=1e-6, atol=1e-6)


def test_each_tower_reads_only_its_features():
  model, params, _, h, g = run('bilinear')
  f = features()
  other = features(seed=5)
  f2 = {'dense': f['dense'].copy(), 'sparse': f['sparse'].copy()}
  f2['dense'][:, 1] = other['dense'][:, 1]  # price: item
  f2['sparse'][:, 1] = other['sparse'][:, 1]  # item
  _, state = model.apply(
    {'params': params}, f2, train=False, mutable=['intermediates']
  )
  inter = state['intermediates']['backbone']
  np.testing.assert_allclose(inter['user'][0], h, rtol=1e-6, atol=1e-6)
  assert np.abs(np.asarray(inter['item'][0]) - g).max() > 1e-4


def test_feature_layout_follows_the_embedding():
  layout = feature_layout(COLUMNS, D, NAMES, 2 + 3 * D)
  assert layout == (
    ('age', 0, 1),
    ('price', 1, 2),
    ('user', 2, 5),
    ('item', 5, 8),
    ('history', 8, 11),
  )
  assert feature_layout(COLUMNS, D, (), 11) is None


@pytest.mark.parametrize(
  ('user', 'item', 'match'),
  [
    (('age', 'user', 'histroy'), ITEM, "names 'histroy'"),
    (USER, ('price', 'item', 'user'), "'user' is in model.user_features"),
    (('age', 'user'), ITEM, "'history' is in neither"),
    ((), ITEM, 'user_features is empty'),
  ],
)
def test_feature_errors_are_one_line(user, item, match):
  layout = feature_layout(COLUMNS, D, NAMES, 11)
  with pytest.raises(ConfigError, match=match) as e:
    two_tower.check_features(user, item, layout)
  assert '\n' not in str(e.value)


def test_dot_needs_equal_widths():
  model = make_model(
    'two_tower',
    dict(
      user_features=USER,
      item_features=ITEM,
      item_hidden=(3,),
      interaction='dot',
    ),
    num_tasks=T,
    vocab_sizes=COLUMNS,
    embed_dim=D,
    tower_hidden=(),
    feature_names=NAMES,
  )
  with pytest.raises(ConfigError, match='equal widths'):
    jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0), features()
    )


def _config(**model):
  config = common.base_config('two_tower', 'synthetic')
  config.model.update(model)
  return config


@pytest.mark.parametrize(
  ('model', 'hidden', 'match'),
  [
    (dict(user_features=('u',)), (), 'item_features is empty'),
    (dict(user_features=('u',), item_features=('u',)), (), "'u' is in"),
    (dict(user_features=('u',), item_features=('i',)), (8,), 'towers.hidden'),
    (
      dict(user_features=('u',), item_features=('i',), interaction='cos'),
      (),
      'model.interaction',
    ),
  ],
)
def test_validate_rules(model, hidden, match):
  config = _config(**model)
  config.towers.hidden = hidden
  with pytest.raises(ConfigError, match=match):
    validate.check_config(config)


def test_validate_accepts_an_mlp_head():
  config = _config(
    user_features=('u',), item_features=('i',), interaction='mlp'
  )
  config.towers.hidden = (8,)
  validate.check_config(config)
  assert isinstance(config, ml_collections.ConfigDict)
