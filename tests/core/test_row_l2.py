"""L2 on the embedding rows a step touches (optimizer.embedding_l2).

Oracles: numpy's rule applied to (g + 2 * lambda * row) on the distinct
rows the batch looks up (np.unique of its ids, the padding row 0 of a
per-feature table left out), with g the plain step's gradient (recovered
from an SGD step without L2); untouched rows bit for bit as they were; the
one-device step for 8 devices.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core import optim, parallel, train_state, train_step
from mtl.core.layers.embedding import Column, lookups
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS
from mtl.errors import ConfigError

# Per-feature tables; the history shares the item table (id 0: padding).
COLUMNS = (
  Column(6, feature='user'),
  Column(12, feature='item'),
  *[Column(12, feature='hist', table='item', pooling='mean')] * 3,
)
LR = 0.1


@functools.cache
def _model():
  return make_model(
    'shared_bottom',
    dict(hidden=(4,)),
    num_tasks=2,
    vocab_sizes=COLUMNS,
    embed_dim=3,
    tower_hidden=(4,),
  )


def _batch(seed, n=16):
  """user ids avoid 5, item ids avoid 11 (rows no step touches); item id
  0 (the padding row) appears as a category and as history padding; a
  device's 2 rows do not touch every row another device touches."""
  rng = np.random.default_rng(seed)
  cols = [rng.integers(0, 5, n), rng.integers(0, 11, n)]
  cols += [rng.integers(0, 11, n) for _ in range(3)]
  cols[1][0] = 0
  return {
    'dense': rng.normal(size=(n, 3)).astype(np.float32),
    'sparse': np.stack(cols, 1).astype(np.int32),
    'labels': rng.integers(0, 2, (2, n)).astype(np.float32),
    'mask': np.ones((2, n), np.float32),
  }


def _tx(name, **kw):
  model = _model()
  return optim.make_optimizer(
    name,
    LR,
    schedule='constant',
    table_shapes=lookups(model.vocab_sizes, model.embed_dim)[1],
    **kw,
  )


def _one_step(tx, batch, axis=None):
  """(initial params, params after one step from key 0)."""
  model, w = _model(), WEIGHTINGS['equal']()
  state = train_state.init_train_state(
    model,
    tx,
    w,
    train_step.features_of(batch),
    num_tasks=2,
    key=jax.random.key(0),
  )
  # The padding and OOV rows start at zero: make them rows a penalty on
  # the padding row would move.
  params = jax.tree.map(jnp.asarray, state.params)
  params['embed']['item'] = params['embed']['item'].at[:2].set(0.5)
  state = state._replace(params=params)
  init = jax.tree.map(np.asarray, state.params)
  tasks = tuple(Task(f't{i}') for i in range(2))
  step = train_step.make_train_step(
    model, tx, w, tasks, steps_per_epoch=1, axis_name=axis
  )
  if axis is None:
    run = jax.jit(step)
  else:
    run = parallel.make_parallel_train_step(step, backend='pmap')
  state, _ = run(state, batch)
  return init, jax.tree.map(np.asarray, state.params)


def _touched(batch):
  """{table: distinct rows looked up, without the padding row 0}."""
  s = batch['sparse']
  user, item = np.unique(s[:, 0]), np.unique(s[:, 1:])
  return {'user': user[user != 0], 'item': item[item != 0]}


@functools.cache
def _plain_gradient():
  """(batch, init, {table: the gradient of the step without L2}), from SGD:
  the rows moved by -LR * g."""
  batch = _batch(0)
  init, new = _one_step(_tx('sgd'), batch)
  g = {t: (init['embed'][t] - new['embed'][t]) / LR for t in ('user', 'item')}
  return batch, init, new, g


def test_dense_tables_sgd_takes_2_lambda_row_on_touched_rows_only():
  batch, init, plain, g = _plain_gradient()
  lam = 0.05
  tx = _tx('sgd', embedding_l2=lam)
  assert tx.row_l2 == {'item': lam, 'user': lam} and not tx.tables
  _, got = _one_step(tx, batch)
  for table, rows in _touched(batch).items():
    w0 = init['embed'][table].astype(np.float64)
    want = w0 - LR * g[table]
    want[rows] -= LR * 2 * lam * w0[rows]
    np.testing.assert_allclose(got['embed'][table], want, atol=1e-6)
    others = np.setdiff1d(np.arange(len(w0)), rows)
    np.testing.assert_array_equal(
      got['embed'][table][others], plain['embed'][table][others]
    )
  # Row 0 of item (the padding) has a gradient but no penalty; user row 5
  # and item row 11 were never looked up.
  assert np.any(g['item'][0] != 0)
  np.testing.assert_array_equal(
    got['embed']['user'][5], init['embed']['user'][5]
  )
  np.testing.assert_array_equal(
    got['embed']['item'][11], init['embed']['item'][11]
  )
  # Nothing else changes: the penalty is on the embedding rows only.
  for k in got:
    if k != 'embed':
      jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        got[k],
        plain[k],
      )


def _mixed():
  """'user' sparse and 'item' dense, both Adagrad, per-table lambdas."""
  return _tx(
    'adagrad',
    sparse={'tables': ('user',), 'method': 'adagrad'},
    embedding_l2=0.05,
    embedding_l2_tables=(('user', 0.2),),
  )


def test_sparse_and_dense_adagrad_follow_numpy_and_8_devices_equal_one():
  batch, init, _, g = _plain_gradient()
  tx = _mixed()
  assert sorted(tx.tables) == ['user']
  assert tx.row_l2 == {'item': 0.05, 'user': 0.2}
  _, got = _one_step(tx, batch)
  for table, rows in _touched(batch).items():
    lam = tx.row_l2[table]
    w0 = init['embed'][table].astype(np.float64)
    grad = g[table].copy()
    grad[rows] += 2 * lam * w0[rows]
    acc = 0.1 + grad**2  # optax.adagrad: initial accumulator 0.1.
    want = w0 - LR * grad / np.sqrt(acc + 1e-7)
    np.testing.assert_allclose(got['embed'][table], want, atol=2e-6)
  np.testing.assert_array_equal(
    got['embed']['user'][5], init['embed']['user'][5]
  )
  # 8 devices (2 rows each): ids all-gathered before the penalty's rows.
  assert jax.device_count() == 8
  _, eight = _one_step(tx, batch, axis='data')
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7),
    eight,
    got,
  )


def test_zero_lambda_is_todays_optimizer_bit_for_bit():
  batch, _, plain, _ = _plain_gradient()
  tx = _tx('sgd', embedding_l2=0.0, embedding_l2_tables=(('user', 0.0),))
  assert not hasattr(tx, 'row_l2')  # A plain optax optimizer.
  _, got = _one_step(tx, batch)
  jax.tree.map(np.testing.assert_array_equal, got, plain)


@pytest.mark.parametrize(
  'kw, message',
  [
    (dict(embedding_l2=-1.0), r'^optimizer.embedding_l2 is -1.0, expected'),
    (
      dict(embedding_l2_tables=(('user',),)),
      r"^optimizer.embedding_l2_tables\[0\] is \('user',\), expected a pair",
    ),
    (
      dict(embedding_l2_tables=(('users', 0.1),)),
      r"^optimizer.embedding_l2_tables\[0\] names 'users', expected",
    ),
  ],
)
def test_bad_embedding_l2_is_one_line(kw, message):
  with pytest.raises(ConfigError, match=message):
    _tx('sgd', **kw)


def test_config_embedding_l2_checked_before_any_work():
  from configs import common
  from mtl.shell import validate

  config = common.base_config('mmoe', 'entire_space')
  config.optimizer.embedding_l2 = -0.5
  with pytest.raises(ConfigError, match=r'^optimizer.embedding_l2 is -0.5'):
    validate.check_config(config)
  config = common.base_config('mmoe', 'entire_space')
  config.optimizer.embedding_l2_tables = (('table', -1.0),)
  with pytest.raises(ConfigError, match=r'^optimizer.embedding_l2_tables\[0'):
    validate.check_config(config)
