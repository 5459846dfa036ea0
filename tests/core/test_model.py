"""MultiTaskModel, Towers and make_model: names, wiring, independence."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl.core.architectures import ARCHITECTURES, SharedBottom
from mtl.core.model import MultiTaskModel, make_model
from mtl.core.towers import Towers
from mtl.errors import ConfigError

B, F, T = 8, 3, 2
VOCAB_SIZES = (4, 5)
S = len(VOCAB_SIZES)
EMBED_DIM = 2
FAST_COMPILE = {'xla_backend_optimization_level': 0}
KWARGS = {
  'single_task': {'hidden': (6,)},
  'shared_bottom': {'hidden': (6,)},
}


def jit(fn):
  return jax.jit(fn, compiler_options=FAST_COMPILE)


def batch(seed=0, num_sparse=S):
  rng = np.random.default_rng(seed)
  sparse = [rng.integers(0, v, B) for v in VOCAB_SIZES[:num_sparse]]
  return {
    'dense': rng.normal(size=(B, F)).astype(np.float32),
    'sparse': np.stack(sparse, 1).astype(np.int32)
    if sparse
    else np.zeros((B, 0), np.int32),
    'labels': rng.integers(0, 2, (T, B)).astype(np.float32),
  }


def features(b):
  return {'dense': b['dense'], 'sparse': b['sparse']}


def model_of(name, num_sparse=S):
  return make_model(
    name,
    KWARGS[name],
    num_tasks=T,
    vocab_sizes=VOCAB_SIZES[:num_sparse],
    embed_dim=EMBED_DIM,
    tower_hidden=(3,),
  )


@functools.cache
def init(name):
  """A real (RNG) init of a model."""
  model = model_of(name)
  return jit(functools.partial(model.init, train=False))(
    jax.random.key(0), features(batch())
  )['params']


def per_task_grads(name):
  """d loss_t / d params for every task t: each leaf gets a leading [T]."""
  model, params, b = model_of(name), init(name), batch(1)

  def task_losses(p):
    logits = model.apply({'params': p}, features(b), train=False)
    return optax.sigmoid_binary_cross_entropy(logits, b['labels']).mean(1)

  return jit(jax.jacrev(task_losses))(params)


def test_param_tree_has_the_fixed_top_level_names():
  params = init('shared_bottom')
  assert set(params) == {'embed', 'backbone', 'towers'}
  assert params['embed']['table'].shape == (sum(VOCAB_SIZES), EMBED_DIM)
  head = params['towers']['tower']['head']['kernel']
  assert head.shape == (T, 3, 1)
  assert not np.allclose(head[0], head[1])  # Each tower its own init.
  for leaf in jax.tree.leaves(params):
    assert leaf.dtype == jnp.float32


def test_no_embed_params_without_sparse_features():
  model = model_of('shared_bottom', num_sparse=0)
  shapes = jax.eval_shape(
    functools.partial(model.init, train=False),
    jax.random.key(0),
    features(batch(num_sparse=0)),
  )['params']
  assert set(shapes) == {'backbone', 'towers'}


def test_single_task_has_one_embedding_table_per_task():
  table = init('single_task')['embed']['table']
  assert table.shape == (T, sum(VOCAB_SIZES), EMBED_DIM)
  assert not np.allclose(table[0], table[1])


def test_single_task_shares_no_parameter_between_tasks():
  grads = per_task_grads('single_task')
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    where = jax.tree_util.keystr(path)
    g = np.asarray(g)  # [loss t, param slice s, ...]
    assert g.shape[1] == T, f'{where} has no task axis'
    for t in range(T):
      assert np.any(g[t, t] != 0), f'task {t} trains nothing in {where}'
      for other in range(T):
        if other != t:
          assert np.all(g[t, other] == 0), f'task {t} reaches {where}[{other}]'


def test_shared_bottom_shares_embedding_and_backbone():
  grads = per_task_grads('shared_bottom')
  for part in ('embed', 'backbone'):
    for path, g in jax.tree_util.tree_leaves_with_path(grads[part]):
      for t in range(T):
        assert np.any(np.asarray(g[t]) != 0), (part, path, t)
  # Towers stay per task even here.
  for g in jax.tree.leaves(grads['towers']):
    assert np.all(np.asarray(g)[0, 1] == 0) and np.all(np.asarray(g)[1, 0] == 0)


def test_towers_match_numpy():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(T, B, 4)).astype(np.float32)
  towers = Towers(num_tasks=T, hidden=(3,))
  params = jit(functools.partial(towers.init, train=False))(
    jax.random.key(0), z
  )['params']['tower']
  got = np.asarray(
    jit(lambda p, z: towers.apply({'params': {'tower': p}}, z, train=False))(
      params, z
    )
  )
  assert got.shape == (T, B)
  dense, head = params['mlp']['Dense_0'], params['head']
  for t in range(T):
    h = np.maximum(z[t] @ dense['kernel'][t] + dense['bias'][t], 0.0)
    want = (h @ head['kernel'][t] + head['bias'][t])[:, 0]
    np.testing.assert_allclose(got[t], want, rtol=1e-5, atol=1e-6)


def test_model_is_embed_then_backbone_then_towers():
  model, params, b = model_of('shared_bottom'), init('shared_bottom'), batch(2)
  got = model.apply({'params': params}, features(b), train=False)
  table = np.asarray(params['embed']['table'])
  x = np.concatenate(
    [b['dense'], table[b['sparse'][:, 0]], table[4 + b['sparse'][:, 1]]], 1
  )
  z = SharedBottom(num_tasks=T, hidden=(6,)).apply(
    {'params': params['backbone']}, x, train=False
  )
  want = Towers(num_tasks=T, hidden=(3,)).apply(
    {'params': params['towers']}, z, train=False
  )
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_backbone_with_other_task_count_is_rejected():
  model = MultiTaskModel(
    num_tasks=3,
    vocab_sizes=VOCAB_SIZES,
    embed_dim=EMBED_DIM,
    backbone=SharedBottom(num_tasks=2, hidden=(4,)),
    tower_hidden=(),
  )
  with pytest.raises(ValueError, match='num_tasks=2'):
    jax.eval_shape(
      functools.partial(model.init, train=False),
      jax.random.key(0),
      features(batch()),
    )


def make(name, kwargs):
  return make_model(
    name, kwargs, num_tasks=T, vocab_sizes=(), embed_dim=2, tower_hidden=()
  )


def test_unknown_model_name_suggests_the_closest():
  with pytest.raises(ValueError) as info:
    make('mmeo', {})
  names = ', '.join(sorted(ARCHITECTURES))
  assert 'adatt, aitm, cgc' in names  # The registry, sorted.
  assert str(info.value) == (
    f"unknown model 'mmeo': expected one of {names} (did you mean 'mmoe'?)"
  )


def test_wrong_keyword_names_model_key_and_accepted_keys():
  with pytest.raises(ConfigError) as info:
    make('ple', {'num_level': 2, 'num_specific_experts': 1})
  message = str(info.value)
  assert '\n' not in message
  assert "'ple'" in message and "'num_level'" in message
  assert "did you mean 'num_levels'?" in message
  for key in (
    'num_levels',
    'num_specific_experts',
    'num_shared_experts',
    'expert_hidden',
    'dropout',
  ):
    assert key in message.split('accepted:')[1]


def test_unset_keyword_takes_the_signature_default():
  model = make('mmoe', {'expert_hidden': (4,)})
  assert model.backbone.num_experts == 8  # MMoE's own default.


def test_num_tasks_is_not_a_model_keyword():
  with pytest.raises(ConfigError, match="'num_tasks'"):
    make('mmoe', {'num_tasks': 2, 'num_experts': 2, 'expert_hidden': (4,)})


def test_config_lists_become_tuples():
  model = make('mmoe', {'num_experts': 2, 'expert_hidden': [4, 3]})
  assert model.backbone.expert_hidden == (4, 3)
  assert model.backbone.num_tasks == T
