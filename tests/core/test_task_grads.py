"""The step's per-task gradient inputs, what it does with a method's outputs,
and the diagnostics, against jax.grad of each task's loss taken separately
(the oracle), on a real MMoE."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl.core import diagnostics, losses, optim, train_state, train_step
from mtl.core import task_grads as tg
from mtl.core.layers.embedding import lookups
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting.base import VECTOR, Combined, WeightingMethod
from mtl.core.weighting.db_mtl import db_mtl
from mtl.errors import ConfigError

TASKS = (Task('a'), Task('b'))
KWARGS = {
  'shared_bottom': dict(hidden=(6, 5)),
  'mmoe': dict(num_experts=3, expert_hidden=(6, 5)),
  'omoe': dict(num_experts=3, expert_hidden=(6,)),
  'cgc': dict(num_specific_experts=1, num_shared_experts=2, expert_hidden=(6,)),
  'ple': dict(
    num_levels=3,
    num_specific_experts=1,
    num_shared_experts=2,
    expert_hidden=(6, 4),
  ),
  'single_task': dict(hidden=(6,)),
}
WANT_PATH = {
  'shared_bottom': ('backbone', 'mlp', 'Dense_1', 'kernel'),
  'mmoe': ('backbone', 'experts', 'mlp', 'Dense_1', 'kernel'),
  'omoe': ('backbone', 'experts', 'mlp', 'Dense_0', 'kernel'),
  'cgc': ('backbone', 'level_0', 'shared_experts', 'mlp', 'Dense_0', 'kernel'),
  'ple': ('backbone', 'level_2', 'shared_experts', 'mlp', 'Dense_1', 'kernel'),
}


@functools.cache
def _model(name='mmoe'):
  """One model object per name, so jitted functions keyed on it hit."""
  return make_model(
    name,
    KWARGS[name],
    num_tasks=2,
    vocab_sizes=(5, 7),
    embed_dim=2,
    tower_hidden=(4,),
  )


def _batch(seed=0, n=16):
  rng = np.random.default_rng(seed)
  return {
    'dense': rng.normal(size=(n, 3)).astype(np.float32),
    'sparse': np.stack(
      [rng.integers(0, 5, n), rng.integers(0, 7, n)], axis=1
    ).astype(np.int32),
    'labels': rng.integers(0, 2, (2, n)).astype(np.float32),
    'mask': (rng.random((2, n)) > 0.3).astype(np.float32),
  }


def _param_shapes(model, batch):
  """The params tree `init` gives (every key and shape), traced by
  eval_shape and never compiled: gradnorm_path only reads its structure."""
  init = functools.partial(model.init, train=False)
  shapes = jax.eval_shape(
    init, jax.random.key(0), train_step.features_of(batch)
  )
  return shapes['params']


def _random_params(model, batch):
  """Random normals of the shapes `init` declares, scaled like its fan-in
  init: compiling PLE's init (RNG code) took 3 of the test's 7.5 s. Real
  inits are tested in tests/core/test_model.py and tests/core/layers."""
  rng = np.random.default_rng(0)

  def draw(s):
    scale = 1.0 / np.sqrt(s.shape[-2]) if len(s.shape) >= 2 else 0.1
    return jnp.asarray(scale * rng.normal(size=s.shape), s.dtype)

  return jax.tree.map(draw, _param_shapes(model, batch))


@functools.cache
def _separate_grads_fn(name):
  """Per-task gradients, one jax.grad per task: the oracle. One program per
  model for both tasks (jitted: op by op, each primitive compiles on its
  own, 25 s for PLE), shared by the tests of that model."""
  model = _model(name)

  def loss(p, batch, t):
    logits = model.apply(
      {'params': p}, train_step.features_of(batch), train=False
    )
    sums, counts = losses.masked_loss_sums(
      logits, batch['labels'], batch['mask'], tasks=TASKS
    )
    return (sums / jnp.maximum(counts, 1.0))[t]

  grad = jax.grad(loss)
  return jax.jit(lambda p, batch: [grad(p, batch, t) for t in range(2)])


def _separate_grads(name, params, batch):
  return jax.device_get(_separate_grads_fn(name)(params, batch))


@pytest.mark.parametrize('name', sorted(WANT_PATH))
def test_gradnorm_layer_is_declared_and_exists(name):
  model = _model(name)
  params = _param_shapes(model, _batch())
  assert tg.gradnorm_path(model, params) == WANT_PATH[name]
  # It is the last Dense kernel of a shared network, by construction.
  leaf = tg.get_path(params, WANT_PATH[name])
  assert leaf.ndim in (2, 3)


def test_single_task_has_no_shared_layer():
  model = _model('single_task')
  with pytest.raises(ConfigError, match='shares no layer'):
    tg.gradnorm_path(model, _param_shapes(model, _batch()))


def test_a_misdeclared_layer_fails_loudly():
  model = _model('mmoe')
  params = _param_shapes(model, _batch())
  bad = model.clone(backbone=model.backbone.clone(expert_hidden=(4, 4, 4)))
  with pytest.raises(ValueError, match='params have no'):
    tg.gradnorm_path(bad, params)


class Seen(NamedTuple):
  norms: jnp.ndarray
  gram: jnp.ndarray


def _recorder(coefficients=None):
  """A method that stores what the step gives it; optionally combines."""

  def init(num_tasks):
    return Seen(jnp.zeros((num_tasks,)), jnp.zeros((num_tasks, num_tasks)))

  def update(weights, state, *, task_grad_norms, task_grad_gram, **unused):
    out = weights if coefficients is None else jnp.asarray(coefficients)
    return out, Seen(task_grad_norms, task_grad_gram)

  return WeightingMethod(
    init,
    update,
    frozenset({'task_grad_norms', 'task_grad_gram'}),
    combines_gradients=coefficients is not None,
  )


def _one_step(model, method, batch, lr=0.1):
  tx = optax.sgd(lr)
  state = train_state.init_train_state(
    model,
    tx,
    method,
    train_step.features_of(batch),
    num_tasks=2,
    key=jax.random.key(0),
  )
  step = train_step.make_train_step(model, tx, method, TASKS, steps_per_epoch=1)
  # train=True with no dropout: the same function as the oracle's.
  return state, jax.jit(step)(state, batch)


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_step_gives_norms_and_gram_of_separate_task_gradients():
  model, batch = _model('mmoe'), _batch()
  state, (new_state, _) = _one_step(model, _recorder(), batch)
  g = _separate_grads('mmoe', state.params, batch)
  path = WANT_PATH['mmoe']
  want_norms = [np.linalg.norm(tg.get_path(gt, path)) for gt in g]
  np.testing.assert_allclose(
    new_state.weighting_state.norms, want_norms, rtol=1e-5
  )
  flat = np.stack([_flat(gt['backbone']) for gt in g])
  np.testing.assert_allclose(
    new_state.weighting_state.gram, flat @ flat.T, rtol=1e-4, atol=1e-7
  )


def test_gradient_space_step_uses_coefficients_on_backbone_only():
  model, batch = _model('mmoe'), _batch()
  c = (2.0, 0.5)
  state, (new_state, metrics) = _one_step(model, _recorder(c), batch, lr=0.1)
  g = _separate_grads('mmoe', state.params, batch)
  params = jax.device_get(state.params)  # The oracle's update in numpy.
  for part in ('embed', 'backbone', 'towers'):
    w = c if part == 'backbone' else (1.0, 1.0)
    want = jax.tree.map(
      lambda p, a, b, w=w: p - 0.1 * (w[0] * a + w[1] * b),
      params[part],
      g[0][part],
      g[1][part],
    )
    np.testing.assert_allclose(
      _flat(new_state.params[part]), _flat(want), rtol=1e-5, atol=1e-7
    )
  np.testing.assert_allclose(metrics['weight'], c)


def test_unknown_need_is_a_clear_error():
  method = WeightingMethod(
    lambda n: (), lambda w, s, **k: (w, s), frozenset({'hessian'})
  )
  with pytest.raises(ValueError, match=r"needs \['hessian'\]"):
    train_step.make_train_step(
      _model(), optax.sgd(0.1), method, TASKS, steps_per_epoch=1
    )


def test_diagnostics_against_separate_gradients_and_gates():
  model, batch = _model('ple'), _batch(1)
  params = _random_params(model, batch)
  out = jax.jit(diagnostics.make_diagnostics(model, TASKS))(params, batch)
  g = _separate_grads('ple', params, batch)
  flat = np.stack([_flat(gt['backbone']) for gt in g])
  scalars = diagnostics.summarize(out, TASKS)
  norms = np.linalg.norm(flat, axis=1)
  np.testing.assert_allclose(
    [scalars['diag/grad_norm/a'], scalars['diag/grad_norm/b']],
    norms,
    rtol=1e-4,
  )
  np.testing.assert_allclose(
    scalars['diag/grad_cos/a~b'],
    flat[0] @ flat[1] / (norms[0] * norms[1]),
    rtol=1e-4,
  )
  # Jitted: op by op, PLE's apply compiles every op on its own.
  _, inter = jax.jit(
    lambda p, x: model.apply(
      {'params': p}, x, train=False, mutable=['intermediates']
    )
  )(params, train_step.features_of(batch))
  gates = np.asarray(inter['intermediates']['backbone']['level_1']['gates'][0])
  for e in range(gates.shape[-1]):
    np.testing.assert_allclose(
      scalars[f'diag/gate/level_1/b/{e}'], gates[1, :, e].mean(), rtol=1e-5
    )
  # Each task's mean gate weights are a distribution over its experts.
  for level in ('level_0', 'level_1', 'level_2'):
    total = sum(
      v for k, v in scalars.items() if k.startswith(f'diag/gate/{level}/a/')
    )
    np.testing.assert_allclose(total, 1.0, rtol=1e-5)


class Vectors(NamedTuple):
  grads: jnp.ndarray  # [T, P] what the step gave


def _vector_method(weights, gradient):
  """A 'vector' method: fixed weights for the other groups and a fixed
  shared gradient; it keeps the [T, P] `task_grads` it was given."""

  def init(num_tasks, num_shared_params=None):
    return Vectors(jnp.zeros((num_tasks, num_shared_params)))

  def update(w, state, *, task_grads, **unused):
    out = Combined(jnp.asarray(weights), jnp.asarray(gradient))
    return out, Vectors(task_grads)

  return WeightingMethod(init, update, frozenset({'task_grads'}), VECTOR)


def test_vector_method_gets_task_grads_and_sets_the_shared_gradient():
  model, batch = _model('mmoe'), _batch()
  size = tg.shared_size(model, _param_shapes(model, batch))
  gradient = np.random.default_rng(3).normal(size=size).astype(np.float32)
  w = (2.0, 0.5)
  method = _vector_method(w, gradient)
  state, (new_state, metrics) = _one_step(model, method, batch, lr=0.1)
  assert state.weighting_state.grads.shape == (2, size)
  g = _separate_grads('mmoe', state.params, batch)
  # task_grads: each task's backbone gradient, flattened in tree order.
  flat = np.stack([_flat(gt['backbone']) for gt in g])
  np.testing.assert_allclose(
    new_state.weighting_state.grads, flat, rtol=1e-5, atol=1e-8
  )
  params = jax.device_get(state.params)
  np.testing.assert_allclose(
    _flat(new_state.params['backbone']),
    _flat(params['backbone']) - 0.1 * gradient,
    rtol=1e-6,
    atol=1e-7,
  )
  for part in ('embed', 'towers'):  # The weighted sum with its weights.
    want = jax.tree.map(
      lambda p, a, b: p - 0.1 * (w[0] * a + w[1] * b),
      params[part],
      g[0][part],
      g[1][part],
    )
    np.testing.assert_allclose(
      _flat(new_state.params[part]), _flat(want), rtol=1e-5, atol=1e-7
    )
  np.testing.assert_allclose(metrics['weight'], w)
  np.testing.assert_allclose(metrics['total_loss'], np.dot(w, metrics['loss']))


def test_flat_and_unflat_are_inverses_in_tree_order():
  tree = {
    'b': jnp.arange(12.0).reshape(2, 2, 3),
    'a': jnp.arange(4.0, dtype=jnp.bfloat16).reshape(2, 2),
  }
  flat = tg.flat(tree)
  assert flat.dtype == jnp.float32
  np.testing.assert_array_equal(
    flat, [[0, 1, 0, 1, 2, 3, 4, 5], [2, 3] + list(range(6, 12))]
  )
  back = tg.unflat(flat[1], tree)
  assert back['a'].dtype == jnp.bfloat16 and back['b'].shape == (2, 3)
  np.testing.assert_array_equal(back['b'], tree['b'][1])
  np.testing.assert_array_equal(back['a'], tree['a'][1])


def test_vector_method_without_task_grads_is_refused():
  method = WeightingMethod(
    lambda n: (), lambda w, s, **k: (w, s), frozenset(), VECTOR
  )
  with pytest.raises(ValueError, match="needs 'task_grads'"):
    train_step.make_train_step(
      _model(), optax.sgd(0.1), method, TASKS, steps_per_epoch=1
    )


def test_task_grads_of_sparse_shared_tables_is_one_line_error():
  model = make_model(
    'esmm',
    dict(hidden=(4,)),
    num_tasks=2,
    vocab_sizes=(5, 7),
    embed_dim=2,
    tower_hidden=(4,),
  )
  tx = optim.make_optimizer(
    'adam',
    0.1,
    sparse={'min_rows': 5, 'method': 'lazy_adam'},
    table_shapes=lookups(model.vocab_sizes, model.embed_dim)[1],
  )
  with pytest.raises(ConfigError) as err:
    train_step.make_train_step(
      model, tx, _vector_method((1.0, 1.0), []), TASKS, steps_per_epoch=1
    )
  assert str(err.value).startswith(
    "the weighting method needs the per-task gradients of the shared 'embed'"
  )
  assert '\n' not in str(err.value)


def test_db_mtl_step_against_separate_gradients():
  # One step of DB-MTL (beta 0.5, k = 1: g_hat_t = 0.5 g_t / L_t) from the
  # separate gradients in numpy: the backbone steps along
  # max_s ||g_hat_s|| sum_t g_hat_t / ||g_hat_t||, the rest along
  # sum_t g_t / L_t (the log losses').
  model, batch = _model('mmoe'), _batch(2)
  state, (new_state, metrics) = _one_step(model, db_mtl(beta=0.5), batch)
  g = _separate_grads('mmoe', state.params, batch)
  losses = np.asarray(metrics['loss'], np.float64)
  flat = np.stack([_flat(gt['backbone']) for gt in g])
  averages = 0.5 * flat / (losses[:, None] + 1e-8)
  norms = np.linalg.norm(averages, axis=1)
  d = norms.max() * (averages / norms[:, None]).sum(0)
  params = jax.device_get(state.params)
  np.testing.assert_allclose(
    _flat(new_state.params['backbone']),
    _flat(params['backbone']) - 0.1 * d,
    rtol=1e-5,
    atol=1e-7,
  )
  w = 1.0 / (losses + 1e-8)
  for part in ('embed', 'towers'):
    want = jax.tree.map(
      lambda p, a, b: p - 0.1 * (w[0] * a + w[1] * b),
      params[part],
      g[0][part],
      g[1][part],
    )
    np.testing.assert_allclose(
      _flat(new_state.params[part]), _flat(want), rtol=1e-5, atol=1e-7
    )
  np.testing.assert_allclose(metrics['weight'], w, rtol=1e-6)
  np.testing.assert_allclose(
    new_state.weighting_state.averages, averages, rtol=1e-5, atol=1e-8
  )
