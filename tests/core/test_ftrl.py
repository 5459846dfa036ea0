"""FTRL-Proximal (mtl/core/ftrl.py, sparse.ftrl) and the wide optimizer.

Oracles: Algorithm 1 of McMahan et al. (KDD 2013) written in float64
numpy (w from z and n at every step), its per-coordinate step applied to a
numpy table from a random init (the params' own w in the z update, as the
module says), scatter-added row gradients for the sparse rule, and
optax.adam alone for the params the wide optimizer does not take.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl.core import ftrl, optim, sparse, sparse_train
from mtl.errors import ConfigError

HYPER = dict(alpha=0.1, beta=1.0, l1=1.5, l2=0.5)
ARGS = dict(beta=1.0, l1=1.5, l2=0.5)  # HYPER as the factories take them.


def _algorithm_1(grads, *, alpha, beta, l1, l2):
  """McMahan et al. 2013, Algorithm 1: [w_1, ..., w_T+1], w from (z, n)."""
  z = np.zeros_like(grads[0], np.float64)
  n = np.zeros_like(z)

  def weights():
    w = -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / alpha + l2)
    return np.where(np.abs(z) <= l1, 0.0, w)

  out = [weights()]
  for g in grads:
    w = weights()
    sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / alpha
    z = z + g - sigma * w
    n = n + g * g
    out.append(weights())
  return out


def _step(w, z, n, g, *, alpha, beta, l1, l2):
  """One coordinate step with the param's own w (equal to Algorithm 1's
  from a zero start); g == 0 leaves a coordinate alone."""
  sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / alpha
  z2, n2 = z + g - sigma * w, n + g * g
  new = -(z2 - np.sign(z2) * l1) / ((beta + np.sqrt(n2)) / alpha + l2)
  new = np.where(np.abs(z2) <= l1, 0.0, new)
  on = g != 0
  return np.where(on, new, w), np.where(on, z2, z), np.where(on, n2, n)


def _grads(rng, steps, shape, zero=0.3):
  """Random gradients, a share of them exactly 0 (coordinates not seen)."""
  g = rng.normal(size=(steps, *shape))
  return np.where(rng.random(g.shape) < zero, 0.0, g)


def test_transform_follows_algorithm_1_and_l1_zeroes_coordinates():
  rng = np.random.default_rng(0)
  grads = _grads(rng, 10, (4, 6))
  want = _algorithm_1(grads, **HYPER)
  tx = ftrl.ftrl(0.1, **ARGS)
  params = {'w': jnp.zeros((4, 6))}
  state = tx.init(params)
  update = jax.jit(tx.update)
  for t, g in enumerate(grads):
    updates, state = update({'w': jnp.asarray(g, jnp.float32)}, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params['w'], want[t + 1], rtol=2e-5, atol=1e-7)
  final = np.asarray(params['w'])
  # L1 put some coordinates at exactly 0 (with a gradient), others not.
  assert 0 < np.sum(final == 0) < final.size
  assert np.all(final[want[-1] == 0] == 0)
  np.testing.assert_allclose(state.n['w'], np.sum(grads**2, 0), rtol=1e-5)


def test_sparse_ftrl_on_touched_rows_equals_dense_transform_and_numpy():
  """Duplicate ids summed; untouched rows and their z, n bit for bit as
  they were; the optax transform on the dense [V, d] gradient (zero on
  untouched rows) gives the same table: FTRL is lazy."""
  rng = np.random.default_rng(1)
  v, d = 9, 3
  table0 = rng.normal(size=(v, d)).astype(np.float32)  # A random init.
  opt = sparse.ftrl(0.1, **ARGS)
  tx = ftrl.ftrl(0.1, **ARGS)
  table, state = jnp.asarray(table0), opt.init(jnp.asarray(table0))
  dense, dstate = jnp.asarray(table0), tx.init(jnp.asarray(table0))
  w, z, n = table0.astype(np.float64), np.zeros((v, d)), np.zeros((v, d))
  apply = jax.jit(lambda *a: opt.apply(*a, step=jnp.asarray(0)))
  dense_step = jax.jit(tx.update)
  for _ in range(6):
    ids = rng.choice(np.arange(1, 7), size=(5, 2))  # Rows 0, 7, 8 never.
    row_grads = rng.normal(size=(5, 2, d)).astype(np.float32)
    table, state = apply(table, state, ids, row_grads)
    g = np.zeros((v, d))
    np.add.at(g, ids.reshape(-1), row_grads.reshape(-1, d))
    w, z, n = _step(w, z, n, g, **HYPER)
    updates, dstate = dense_step(jnp.asarray(g, jnp.float32), dstate, dense)
    dense = optax.apply_updates(dense, updates)
  np.testing.assert_allclose(table, w, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(state['z'], z, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(state['n'], n, rtol=2e-5)
  np.testing.assert_allclose(dense, table, rtol=1e-6, atol=1e-7)
  for row in (0, 7, 8):
    np.testing.assert_array_equal(table[row], table0[row])
    np.testing.assert_array_equal(dense[row], table0[row])
    np.testing.assert_array_equal(state['z'][row], 0.0)
  assert np.any(np.asarray(table) == 0)  # l1 zeroed a coordinate.


def _wide_params(rng):
  return {
    'wide': {
      'user': jnp.zeros((6, 2)),  # [V, num_outputs], zero init.
      'bias': jnp.zeros((2,)),
    },
    'mlp': {'kernel': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
    'embed': {'table': jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)},
  }


def test_wide_ftrl_and_the_rest_plain_adam_clipped_together():
  rng = np.random.default_rng(2)
  params = _wide_params(rng)
  clip = 2.0
  tx = optim.make_optimizer(
    'adam',
    0.01,
    schedule='constant',
    grad_clip_norm=clip,
    wide=dict(name='ftrl', learning_rate=0.1, **ARGS),
  )
  tx = optim.if_finite(tx, 3)
  adam = optax.adam(0.01)
  rest = {k: v for k, v in params.items() if k != 'wide'}
  state, adam_state = tx.init(params), adam.init(rest)
  user, bias = [], []
  step, apply = jax.jit(tx.update), jax.jit(optax.apply_updates)
  adam_step = jax.jit(adam.update)
  for t in range(5):
    g = jax.tree.map(
      lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params
    )
    if t == 2:  # A non-finite step changes nothing.
      bad = jax.tree.map(lambda x: x * jnp.nan, g)
      updates, state = step(bad, state, params)
      assert not any(np.any(u) for u in jax.tree.leaves(updates))
    norm = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(g)))
    factor = min(1.0, clip / norm)  # Every gradient, the wide part's too.
    user.append(np.asarray(g['wide']['user'], np.float64) * factor)
    bias.append(np.asarray(g['wide']['bias'], np.float64) * factor)
    updates, state = step(g, state, params)
    params = apply(params, updates)
    f32 = np.float32(factor)
    g_rest = {k: jax.tree.map(lambda x, f=f32: x * f, g[k]) for k in rest}
    u, adam_state = adam_step(g_rest, adam_state, rest)
    rest = apply(rest, u)
  hyper = dict(HYPER, alpha=0.1)
  np.testing.assert_allclose(
    params['wide']['user'], _algorithm_1(user, **hyper)[-1], atol=1e-6
  )
  np.testing.assert_allclose(
    params['wide']['bias'], _algorithm_1(bias, **hyper)[-1], atol=1e-6
  )
  for k in rest:
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      params[k],
      rest[k],
    )


def test_wide_adagrad_l2_and_same_is_todays_optimizer():
  rng = np.random.default_rng(3)
  params = _wide_params(rng)
  params['wide']['user'] = jnp.ones((6, 2))
  g = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
  tx = optim.make_optimizer(
    'sgd', 0.1, wide=dict(name='adagrad', learning_rate=0.2, l2=0.4)
  )
  updates, _ = jax.jit(tx.update)(g, tx.init(params), params)
  # optax.adagrad: acc = 0.1 + g^2, step -lr * g / sqrt(acc + 1e-7), with
  # g = 0.5 + l2 * w.
  gw = 0.5 + 0.4 * 1.0
  want = -0.2 * gw / np.sqrt(0.1 + gw**2 + 1e-7)
  np.testing.assert_allclose(updates['wide']['user'], want, rtol=1e-6)
  np.testing.assert_allclose(updates['mlp']['kernel'], -0.05, rtol=1e-6)
  # 'same' (the default) is today's optimizer: plain optax state.
  same = optim.make_optimizer('adam', 0.01, wide=dict(name='same'))
  today = optim.make_optimizer('adam', 0.01)
  s1, s2 = same.init(params), today.init(params)
  assert jax.tree.structure(s1) == jax.tree.structure(s2)
  u1, _ = jax.jit(same.update)(g, s1, params)
  u2, _ = jax.jit(today.update)(g, s2, params)
  jax.tree.map(np.testing.assert_array_equal, u1, u2)


@pytest.mark.parametrize(
  'wide, message',
  [
    (dict(name='ftlr'), r"^optimizer.wide.name is 'ftlr', expected one of"),
    (dict(name='adagrad', l1=0.1), r'^optimizer.wide.l1 is 0.1 with'),
    (dict(name='ftrl', beta=-1.0), r'^optimizer.wide.beta is -1.0, expected'),
    (dict(lr=0.1), r'^optimizer.wide.lr is not a key'),
  ],
)
def test_bad_wide_config_is_one_line(wide, message):
  with pytest.raises(ConfigError, match=message):
    optim.make_optimizer('adam', 0.01, wide=wide)


def test_config_keys_are_checked_before_any_work():
  from configs import common
  from mtl.shell import validate

  config = common.base_config('mmoe', 'entire_space')
  validate.check_config(config)  # The defaults pass.
  config.optimizer.wide.name = 'adagrad'
  config.optimizer.wide.l1 = 0.2
  with pytest.raises(ConfigError, match=r'^optimizer.wide.l1 is 0.2 with'):
    validate.check_config(config)
  config = common.base_config('mmoe', 'entire_space')
  config.optimizer.wide.learning_rate = 0.0
  with pytest.raises(ConfigError, match=r'^optimizer.wide.learning_rate is 0'):
    validate.check_config(config)
  config = common.base_config('mmoe', 'entire_space')
  config.optimizer.sparse.method = 'ftrl'
  validate.check_config(config)
  config.optimizer.sparse.ftrl.l1 = -1.0
  with pytest.raises(ConfigError, match=r'^optimizer.sparse.ftrl.l1 is -1.0'):
    validate.check_config(config)
  with pytest.raises(ConfigError, match=r'^optimizer.sparse.ftrl.l3 is not'):
    optim.make_optimizer('adam', 0.01, sparse={'ftrl': {'l3': 1.0}})


def test_wide_ftrl_beside_sparse_ftrl_table_clipped_and_skipped():
  """SparseTables: 'wide' (FTRL) and 'mlp' (Adam) are its dense optimizer,
  the table sparse FTRL; one global norm clips all three (the table's by
  its combined rows); a non-finite step changes nothing."""
  rng = np.random.default_rng(4)
  model = types.SimpleNamespace(vocab_sizes=(5, 7), embed_dim=2)
  params = _wide_params(rng)
  params['embed']['table'] = jnp.asarray(rng.normal(size=(12, 2)), jnp.float32)
  clip = 1.5
  tx = optim.make_optimizer(
    'adam',
    0.01,
    schedule='constant',
    grad_clip_norm=clip,
    sparse={'tables': ('table',), 'method': 'ftrl', 'ftrl': ARGS},
    wide=dict(name='ftrl', learning_rate=0.1, **ARGS),
    table_shapes={'table': (12, 2)},
  )
  tx = optim.if_finite(tx, 3)
  ids = np.stack([rng.integers(0, 5, 4), rng.integers(0, 6, 4)], 1)
  row_grads = rng.normal(size=(4, 2, 2)).astype(np.float32)
  dense_grads = jax.tree.map(
    lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32),
    {k: v for k, v in params.items() if k != 'embed'},
  )
  dense_grads['embed'] = {}

  @jax.jit
  def step(params, opt_state, dense_grads, row_grads, losses):
    return sparse_train.apply_updates(
      tx, model, params, opt_state, dense_grads,
      {'embed': {'table': row_grads}}, jnp.asarray(ids, jnp.int32),
      step=jnp.asarray(0), losses=losses, skip_nonfinite=True,
    )  # fmt: skip

  state = tx.init(params)
  bad = step(params, state, dense_grads, row_grads, jnp.asarray([np.nan]))
  assert not bad[2]
  jax.tree.map(np.testing.assert_array_equal, bad[0], params)
  new, _, finite = step(params, state, dense_grads, row_grads, jnp.ones(1))
  assert finite
  # The oracle: the table's dense gradient (offsets 0, 5), one global norm.
  g_table = np.zeros((12, 2))
  np.add.at(g_table, (ids + [0, 5]).reshape(-1), row_grads.reshape(-1, 2))
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(dense_grads)]
  norm = np.sqrt(sum(np.sum(x**2) for x in leaves) + np.sum(g_table**2))
  factor = min(1.0, clip / norm)
  assert factor < 1
  zero = np.zeros((12, 2))
  w = np.asarray(params['embed']['table'], np.float64)
  # The table's FTRL: alpha the main learning rate, sparse.ftrl's others.
  table_hyper = dict(HYPER, alpha=0.01)
  want, _, _ = _step(w, zero, zero, g_table * factor, **table_hyper)
  np.testing.assert_allclose(new['embed']['table'], want, rtol=1e-5, atol=1e-6)
  untouched = np.setdiff1d(np.arange(12), ids + [0, 5])
  np.testing.assert_array_equal(
    new['embed']['table'][untouched], params['embed']['table'][untouched]
  )
  for k in ('user', 'bias'):
    g = np.asarray(dense_grads['wide'][k], np.float64) * factor
    np.testing.assert_allclose(
      new['wide'][k], _algorithm_1([g], **HYPER)[-1], rtol=1e-5, atol=1e-7
    )
  adam = optax.adam(0.01)
  g = np.asarray(dense_grads['mlp']['kernel']) * np.float32(factor)
  u, _ = adam.update({'k': g}, adam.init({'k': params['mlp']['kernel']}))
  np.testing.assert_allclose(
    new['mlp']['kernel'], params['mlp']['kernel'] + u['k'], rtol=1e-5
  )
