"""The wide part, its FTRL optimizer and the feature interactions under data
parallelism and in a population.

Oracles: the single-device step (`axis_name=None`, no collectives) on the
whole global batch for 8 emulated devices (tests/conftest.py), as in
tests/core/test_parallel.py; the single run of a member's seed, on that member's
own data order, for a population member, as in tests/shell/test_population.py.
The model is MMoE with a wide part (dense term, an id weight per value of
both categorical features and their declared hashed cross) trained by
FTRL-Proximal (optimizer.wide.name 'ftrl', with L1 and L2) beside Adam,
and DCN-V2 (data parallel) or FM (population) between the embedding and
the backbone; the dense columns enter through periodic (PLR) embeddings.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core import optim, parallel, population, train_state, train_step
from mtl.core.layers.embedding import lookups
from mtl.core.layers.wide import cross_bucket
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS

TASKS = (Task('a'), Task('b'))
N_DEV = 8
GLOBAL_BATCH = 32  # 4 rows a device.
NUM_STEPS = 3
VOCAB = (5, 7)  # Plain-int vocab sizes: one shared table, ids 0.. are values.
NAMES = ('d0', 'd1', 'd2', 'user', 'item')  # Dense, then sparse names.
EMBED_DIM = 2
BUCKETS = 64  # The cross's rows: 35 pairs, so some buckets stay untouched.
# Constant alpha (a rate of 0.5 moves the zero-init wide weights visibly in
# 3 steps); l1 puts some coordinates at exactly 0, l2 enters the closed form.
WIDE_TX = dict(name='ftrl', learning_rate=0.5, l1=0.02, l2=0.1, beta=1.0)
# float32, and a psum adds the 8 shards' partial sums (loss counts, every
# gradient, the wide part's included, the clipping norm) in another order
# than one device sums 32 rows: a few ulps per step, compounded over 3 steps
# of Adam and FTRL (FTRL's closed form is continuous in z and n, its L1
# threshold included: at |z| = l1 the weight is 0 on both sides). rtol 1e-5
# / atol 1e-6 is ~100 ulps of the values involved (O(0.01-1)),
# tests/core/test_parallel.py's bound; measured, the largest difference is 1-2
# ulps (1.5e-7, 6 % of the bound). A real mistake is far above it: a shard
# that misses the others' gradients (one device on shard 0's rows alone)
# ends 0.1 away in the wide part, 0.28 elsewhere.
RTOL, ATOL = 1e-5, 1e-6
# A member against its single run: the same ops on the same rows, vmapped
# (a batched matmul may sum in another order): float rounding, measured at
# 1-2 ulps (relative <= 5e-7) after 3 steps;
# tests/core/test_sparse_training.py's
# bound.
POP_RTOL, POP_ATOL = 2e-6, 1e-7
# Data parallel: the real-data configs' optimizer (rows' L2: SparseTables);
# the population: the plain one (population lr_scale on multi_transform).
TX_OF = {'dcn_v2': 'rows', 'fm': 'plain'}
# The dense columns through PLR embeddings (layers/numeric.py) in both.
NUMERIC = dict(embedding='periodic', frequencies=3, dim=2, sigma=0.5)


@functools.cache
def _model(interaction):
  return make_model(
    'mmoe',
    dict(num_experts=2, expert_hidden=(4,)),
    num_tasks=2,
    vocab_sizes=VOCAB,
    embed_dim=EMBED_DIM,
    tower_hidden=(4,),
    feature_names=NAMES,
    wide=dict(enabled=True, crosses=(('user', 'item'),), cross_buckets=BUCKETS),
    interaction=interaction,
    cross=dict(num_layers=2),
    numeric=NUMERIC,
  )


@functools.cache
def _tx(kind):
  """'plain': Adam, the wide part's FTRL beside it (optax.multi_transform).
  'rows': the same inside sparse_train.SparseTables, as a real-data config
  with the embedding rows' L2 runs it (the step clips the global norm of
  all gradients, the wide part's included, and adds the touched rows' L2)."""
  if kind == 'plain':
    return optim.make_optimizer('adam', 0.05, wide=WIDE_TX)
  return optim.make_optimizer(
    'adam',
    0.05,
    wide=WIDE_TX,
    grad_clip_norm=0.5,
    embedding_l2=0.01,
    table_shapes=lookups(VOCAB, EMBED_DIM)[1],
  )


@functools.cache
def _weighting():
  return WEIGHTINGS['equal']()


def _batch(rng, n=GLOBAL_BATCH):
  mask = (rng.random((2, n)) > 0.3).astype(np.float32)
  mask[0, :4] = 0.0  # Shard 0 has no rows of task a; the others vary.
  mask[1, 4:8] = 1.0
  return {
    'dense': rng.normal(size=(n, 3)).astype(np.float32),
    'sparse': np.stack(
      [rng.integers(0, 5, n), rng.integers(0, 7, n)], axis=1
    ).astype(np.int32),
    'labels': rng.integers(0, 2, (2, n)).astype(np.float32),
    'mask': mask,
  }


@functools.cache
def _batches():
  rng = np.random.default_rng(0)
  out = [_batch(rng) for _ in range(NUM_STEPS)]
  per_shard = out[0]['mask'].reshape(2, N_DEV, -1).sum(-1)
  assert len(set(per_shard[0].tolist())) > 2, 'masks must be uneven'
  return out


def _init(interaction, key=0):
  return train_state.init_train_state(
    _model(interaction),
    _tx(TX_OF[interaction]),
    _weighting(),
    train_step.features_of(_batches()[0]),
    num_tasks=2,
    key=jax.random.key(key),
  )


@functools.cache
def _dcn_init():
  return _init('dcn_v2')


def _fresh_dcn_state():
  """The DCN-V2 model's initial state, made once; a copy each call (the
  parallel step donates its state)."""
  return jax.tree.map(jnp.copy, _dcn_init())


def _step(interaction, axis_name=None):
  return train_step.make_train_step(
    _model(interaction),
    _tx(TX_OF[interaction]),
    _weighting(),
    TASKS,
    steps_per_epoch=1,
    axis_name=axis_name,
  )


def _as_numbers(x):
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(x))
  return np.asarray(x)


def _assert_trees_close(got, want, rtol, atol):
  chex.assert_trees_all_equal_structs(got, want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(
      _as_numbers(g), _as_numbers(w), rtol=rtol, atol=atol
    )


@functools.cache
def _single_device_run():
  """The oracle: NUM_STEPS single-device steps, (final state, metrics)."""
  single = jax.jit(_step('dcn_v2'))
  state = _fresh_dcn_state()
  metrics = []
  for batch in _batches():
    state, m = single(state, batch)
    jax.block_until_ready(m)
    metrics.append(m)
  return state, metrics


def test_the_oracle_trains_every_part():
  """What the comparisons below compare: the wide part's tables moved by
  FTRL where ids were seen, exactly 0 where not (and where L1 holds them),
  the cross network and the PLR embeddings moved, their params under
  `interaction` and `numeric`."""
  state, _ = _single_device_run()
  params, init = state.params, _dcn_init().params
  assert sorted(params) == [
    'backbone',
    'embed',
    'interaction',
    'numeric',
    'towers',
    'wide',
  ]
  wide = params['wide']
  assert sorted(wide) == ['bias', 'cross_user_x_item', 'dense', 'ids_table']
  seen = np.zeros(BUCKETS, bool)
  for b in _batches():
    ids = cross_bucket(b['sparse'][:, 0], b['sparse'][:, 1], BUCKETS)
    seen[np.asarray(ids)] = True
  assert 0 < seen.sum() < BUCKETS
  cross = np.asarray(wide['cross_user_x_item'])
  np.testing.assert_array_equal(cross[~seen], 0.0)
  assert np.count_nonzero(cross[seen]) > 0
  # FTRL's state of the wide part only (the main params go through Adam).
  z = np.asarray(
    state.opt_state['dense']
    .inner_states['wide']
    .inner_state.z['wide']['cross_user_x_item']
  )
  n = np.asarray(
    state.opt_state['dense']
    .inner_states['wide']
    .inner_state.n['wide']['cross_user_x_item']
  )
  # Paper's closed form (McMahan et al. 2013, Algorithm 1) from z and n.
  a, beta, l1, l2 = (WIDE_TX[k] for k in ('learning_rate', 'beta', 'l1', 'l2'))
  want = np.where(
    np.abs(z) <= l1,
    0.0,
    -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / a + l2),
  )
  np.testing.assert_allclose(cross, want, rtol=1e-6, atol=1e-7)
  assert np.any((np.abs(z) <= l1) & (n > 0)), 'L1 zeroes no touched weight'
  for part in ('interaction', 'numeric', 'backbone'):
    moved = jax.tree.map(
      lambda a, b: not np.allclose(a, b), params[part], init[part]
    )
    assert all(jax.tree.leaves(moved)), part


@pytest.mark.parametrize('backend', parallel.BACKENDS)
def test_8_devices_equal_one(backend):
  assert jax.device_count() == N_DEV, 'tests/conftest.py emulates 8 devices'
  want, want_ms = _single_device_run()
  run = parallel.make_parallel_train_step(
    _step('dcn_v2', axis_name='data'), backend=backend
  )
  got = _fresh_dcn_state()
  for batch, want_m in zip(_batches(), want_ms, strict=True):
    got, got_m = run(got, batch)
    # Several emulated devices in one process can deadlock with many queued
    # steps (docs/ARCHITECTURE.md): wait on every step.
    jax.block_until_ready(got_m)
    for key in ('loss', 'weight', 'total_loss'):
      np.testing.assert_allclose(
        got_m[key], want_m[key], rtol=RTOL, atol=ATOL, err_msg=key
      )
  assert int(got.step) == NUM_STEPS
  _assert_trees_close(got, want, RTOL, ATOL)
  # Untouched hashed buckets: bit for bit 0 on every device, as on one.
  np.testing.assert_array_equal(
    np.asarray(got.params['wide']['cross_user_x_item'])[
      np.asarray(want.params['wide']['cross_user_x_item']) == 0
    ],
    0.0,
  )


# --- population -------------------------------------------------------------

K = 2
POP_BATCH = 16
POP_SEEDS = (0, 1)


@functools.cache
def _pop_data():
  """One split of 3 batches (the device-resident rows members gather from)
  and each member's own permutation of it."""
  rng = np.random.default_rng(3)
  data = {k: jnp.asarray(v) for k, v in _batch(rng, 3 * POP_BATCH).items()}
  perms = jnp.stack(
    [jnp.asarray(rng.permutation(3 * POP_BATCH), jnp.int32) for _ in range(K)]
  )
  return data, perms


def test_population_member_equals_its_single_run_step_by_step():
  """K=2 members of one config (seeds 0 and 1: lr_scale 1, task weights
  1) with wide + FM and the wide FTRL: member k after each step equals
  the single run of seed k on member k's data order."""
  model = _model('fm')
  step = _step('fm')
  features = train_step.features_of(_batches()[0])
  keys = [jax.random.key(s) for s in POP_SEEDS]
  states = population.init_population(
    model,
    _tx('plain'),
    [_weighting()] * K,
    features,
    num_tasks=2,
    init_keys=keys,
  )
  # FM has no params.
  assert sorted(states.params) == [
    'backbone',
    'embed',
    'numeric',
    'towers',
    'wide',
  ]
  hparams = {
    'task_weights': jnp.ones((K, 2)),
    'lr_scale': jnp.ones((K,)),
    'member': jnp.arange(K, dtype=jnp.int32),
  }
  pop_run = jax.jit(
    population.make_population_steps(step, batch_size=POP_BATCH, num_steps=1)
  )
  single_run = jax.jit(
    train_step.make_scanned_steps(step, batch_size=POP_BATCH, num_steps=1)
  )
  data, perms = _pop_data()
  singles = [_init('fm', s) for s in POP_SEEDS]
  start = jax.tree.map(np.asarray, states.params)
  for k in range(K):  # The same start: one vmapped init is K inits.
    _assert_trees_close(
      population.member(start, k), singles[k].params, 0.0, 0.0
    )
  for i in range(3):
    states, pop_m = pop_run(states, hparams, data, perms, i)
    # Compared in numpy: member k of each leaf without a dispatch per leaf.
    pop_np, pop_m = jax.tree.map(_as_numbers, (states, pop_m))
    for k in range(K):
      singles[k], m = single_run(singles[k], data, perms[k], i)
      # Metrics [num_steps=1, K, ...].
      got_m = jax.tree.map(lambda x, k=k: x[:, k], pop_m)
      _assert_trees_close(got_m, m, POP_RTOL, POP_ATOL)
      _assert_trees_close(
        population.member(pop_np, k), singles[k], POP_RTOL, POP_ATOL
      )
  # The members really differ (seed and data order), and the wide part moved.
  a, b = (population.member(pop_np.params, k) for k in range(K))
  assert not np.allclose(
    jax.tree.leaves(a['backbone'])[0], jax.tree.leaves(b['backbone'])[0]
  )
  assert not np.allclose(a['wide']['ids_table'], b['wide']['ids_table'])
  assert np.count_nonzero(np.asarray(a['wide']['ids_table'])) > 0
