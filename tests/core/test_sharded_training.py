"""Training with embedding tables sharded by rows over 8 emulated devices.

Oracle: the replicated run of the same config (every device holds every
table and its state, the ids and row gradients all-gathered), itself tested
against one device and against dense optimizers (test_sparse_training.py).

- Bit for bit where the arithmetic is the same: every id at most once in
  each global batch, so each row's gradient is one term on both routes, and
  equal weighting (no sum over rows): parameters and optimizer state equal
  after 20 steps, for every sparse method.
- Within float32 rounding where it is not: with duplicate ids a row's
  gradient is summed in another order (each device first, then the
  owners), and the Gram matrix, norms and clipping norm are sums over the
  rows each owner holds, `psum`med. The tolerance is derived below.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl.core import (
  optim,
  parallel,
  sharded_embedding,
  sharded_tables,
  sparse,
  sparse_train,
  train_state,
  train_step,
)
from mtl.core.layers.embedding import Column, lookups
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS

N = 8
# Per-feature tables of more rows than devices (user: 4 rows a device and
# 5 padding rows; item 29: not a multiple of 8); the history shares item's.
FLAT = (Column(37, feature='user'), Column(29, feature='item'))
SEQ = FLAT + (Column(29, feature='hist', table='item', pooling='mean'),) * 3
TABLES = ('item', 'user')
STEPS = 20


@functools.cache
def _model(vocab):
  return make_model(
    'mmoe',
    dict(num_experts=2, expert_hidden=(4,)),
    num_tasks=2,
    vocab_sizes=vocab,
    embed_dim=3,
    tower_hidden=(4,),
  )


def _batches(vocab, *, unique, seed=0, n=16):
  """STEPS global batches; `unique`: no id twice in a batch's table."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(STEPS):
    if unique:
      cols = [rng.permutation(int(v))[:n] for v in vocab]
    else:  # Zipf-like: a few hot ids, duplicated within and across devices.
      cols = [np.minimum(rng.zipf(1.5, n) - 1, int(v) - 1) for v in vocab]
    out.append(
      {
        'dense': rng.normal(size=(n, 3)).astype(np.float32),
        'sparse': np.stack(cols, 1).astype(np.int32),
        'labels': rng.integers(0, 2, (2, n)).astype(np.float32),
        'mask': np.ones((2, n), np.float32),
      }
    )
  return out


def _tx(model, method, **kw):
  return optim.make_optimizer(
    'adam',
    0.05,
    sparse={'tables': TABLES, 'method': method},
    table_shapes=lookups(model.vocab_sizes, model.embed_dim)[1],
    **kw,
  )


def _runs(vocab, method, weighting, batches, **kw):
  """(the initial user table, (replicated params, opt_state and weighting
  state, metrics), the same of the sharded run, unsharded) after a step per
  batch, from the same initial state."""
  model = _model(vocab)
  tx = _tx(model, method, **kw)
  w = WEIGHTINGS[weighting]()
  tasks = (Task('t0'), Task('t1'))
  features = train_step.features_of(batches[0])
  init = train_state.init_train_state(
    model, tx, w, features, num_tasks=2, key=jax.random.key(0)
  )
  rows = {t: lookups(vocab, 3)[1][t][0] for t in TABLES}
  out = [np.asarray(init.params['embed']['user'])]
  for sharded in ((), TABLES):
    txs = tx._replace(sharded=sharded)
    step = train_step.make_train_step(
      model, txs, w, tasks, steps_per_epoch=1, axis_name='data'
    )
    specs = None
    state = jax.tree.map(jnp.copy, init)
    if sharded:
      specs = functools.partial(
        sharded_tables.specs, names=sharded, axis_name='data'
      )
      state = sharded_tables.shard_state(state, sharded, N)
    run = parallel.make_parallel_train_step(
      step, backend='shard_map', state_specs=specs
    )
    metrics = []
    for b in batches:
      state, m = run(state, b)
      metrics.append(jax.tree.map(np.asarray, m))
    if sharded:
      state = sharded_tables.unshard_state(state, rows, N)
    state = (state.params, state.opt_state, state.weighting_state)
    out.append((jax.tree.map(np.asarray, state), metrics))
  return out


@pytest.mark.usefixtures('fusion_emitters')
@pytest.mark.parametrize('method', sorted(sparse.SPARSE_OPTIMIZERS))
def test_unique_ids_sharded_equals_replicated_bit_for_bit(method):
  assert jax.device_count() == N
  first, (want, wm), (got, gm) = _runs(
    FLAT, method, 'equal', _batches(FLAT, unique=True)
  )
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(g, w)
  np.testing.assert_array_equal(
    [m['loss'] for m in gm], [m['loss'] for m in wm]
  )
  # Not trivially: the table moved.
  assert not np.array_equal(got[0]['embed']['user'], first)


def test_each_device_holds_its_rows_only():
  """The addressable bytes of a sharded table and of its state on each
  device are 1/N of the whole, within one row."""
  model = _model(FLAT)
  tx = _tx(model, 'lazy_adam')._replace(sharded=TABLES)
  w = WEIGHTINGS['equal']()
  batch = _batches(FLAT, unique=True)[0]
  init = train_state.init_train_state(
    model, tx, w, train_step.features_of(batch), num_tasks=2,
    key=jax.random.key(0),
  )  # fmt: skip
  state = sharded_tables.shard_state(init, TABLES, N)
  run = parallel.make_parallel_train_step(
    train_step.make_train_step(
      model, tx, w, (Task('t0'), Task('t1')), steps_per_epoch=1,
      axis_name='data',
    ),
    backend='shard_map',
    state_specs=functools.partial(
      sharded_tables.specs, names=TABLES, axis_name='data'
    ),
  )  # fmt: skip
  state, _ = run(state, batch)
  for name, (v, d) in lookups(FLAT, 3)[1].items():
    leaves = [state.params['embed'][name]]
    leaves += jax.tree.leaves(state.opt_state['sparse'][name])
    for leaf in leaves:
      whole = v * d * leaf.dtype.itemsize
      for shard in leaf.addressable_shards:
        assert shard.data.nbytes <= whole / N + d * leaf.dtype.itemsize
        assert shard.data.shape[0] == sharded_embedding.rows_per_device(v, N)


def _reassociation_bound(terms, count):
  """|fl(sum) - sum| <= gamma_k sum |x| for a float32 sum of k terms in any
  order (Higham, Accuracy and Stability, (4.4)), for two orders: twice."""
  u = np.finfo(np.float32).eps / 2
  gamma = count * u / (1 - count * u)
  return 2 * gamma * terms


def test_gram_and_norms_of_sharded_rows_equal_the_replicated_ones():
  """The per-task Gram matrix and norms the balancing methods read, from
  duplicate ids: equal within the reassociation bound of their sums."""
  model = _model(SEQ)
  batch = _batches(SEQ, unique=False, seed=3, n=64)[0]
  rng = np.random.default_rng(4)
  layout, shapes = lookups(SEQ, 3)
  task_rows = {
    'embed': {
      lk.name: jnp.asarray(
        rng.normal(size=(2, 64, lk.stop - lk.start, 3)), jnp.float32
      )
      for lk in layout
    }
  }
  mesh = parallel.make_mesh()
  spec = jax.sharding.PartitionSpec
  split = {'embed': {k: spec(None, 'data') for k in task_rows['embed']}}

  def both(ids, rows, sharded):
    gram = sparse_train.task_rows_gram(
      model, ids, rows, TABLES, 'data', sharded
    )
    norm = sparse_train.task_rows_norm(
      model, ids, rows, 'user', 'data', sharded
    )
    return gram, norm

  out = {}
  for sharded in ((), TABLES):
    fn = jax.shard_map(
      functools.partial(both, sharded=sharded),
      mesh=mesh,
      in_specs=(spec('data'), split),
      out_specs=spec(),
      check_vma=False,
    )
    out[sharded] = jax.tree.map(
      np.asarray, jax.jit(fn)(batch['sparse'], task_rows)
    )
  (gw, nw), (gg, ng) = out[()], out[TABLES]
  # The oracle: numpy, float64, the dense per-task gradients of the tables.
  dense = {t: np.zeros((2,) + shapes[t]) for t in TABLES}
  for lk in layout:
    ids = np.asarray(lk.ids(batch['sparse'])).reshape(-1)
    g = np.asarray(task_rows['embed'][lk.name], np.float64).reshape(2, -1, 3)
    for t in range(2):
      np.add.at(dense[lk.table][t], ids, g[t])
  flat = np.concatenate([dense[t].reshape(2, -1) for t in TABLES], 1)
  gram = flat @ flat.T
  terms = np.abs(flat) @ np.abs(flat).T
  k = 64 * 5 + flat.shape[1]  # At most: every gather's terms, every row.
  bound = _reassociation_bound(terms, k)
  np.testing.assert_array_less(np.abs(gg - gram), bound + 1e-30)
  np.testing.assert_array_less(np.abs(gw - gram), bound + 1e-30)
  assert np.all(np.abs(gg - gw) <= 2 * bound)
  norm = np.linalg.norm(dense['user'].reshape(2, -1), axis=1)
  np.testing.assert_allclose(ng, norm, rtol=4 * k * np.finfo(np.float32).eps)
  np.testing.assert_allclose(ng, nw, rtol=4 * k * np.finfo(np.float32).eps)


@pytest.mark.parametrize('block_rows', [1 << 16, 2])
def test_a_split_table_is_drawn_in_its_blocks_as_the_whole_one(
  block_rows, monkeypatch
):
  """The model with `row_blocks` initialises each split table in its
  blocks, each row drawn alone: the whole table's init, split by numpy's
  rule (row i at block i mod N, row i // N), padding rows zero; drawn in
  one chunk, or 2 rows of each block at a time (the last chunk overlapping
  the one before)."""
  from mtl.core.layers import embedding

  monkeypatch.setattr(embedding, 'BLOCK_ROWS', block_rows)
  model = _model(SEQ)
  blocked = model.clone(row_blocks=tuple((t, N) for t in TABLES))
  features = train_step.features_of(_batches(SEQ, unique=False)[0])
  whole = model.init(jax.random.key(7), features, train=False)['params']
  split = jax.jit(
    lambda: blocked.init(jax.random.key(7), features, train=False)
  )()['params']
  for t in TABLES:
    table = np.asarray(whole['embed'][t])
    r = -(-table.shape[0] // N)
    padded = np.zeros((N * r, table.shape[1]), table.dtype)
    padded[: table.shape[0]] = table
    want = np.concatenate([padded[k::N] for k in range(N)])
    np.testing.assert_array_equal(np.asarray(split['embed'][t]), want)
  rest = lambda p: {k: v for k, v in p.items() if k != 'embed'}  # noqa: E731
  jax.tree.map(np.testing.assert_array_equal, rest(split), rest(whole))


def test_row_counters_past_2_to_the_32():
  """initializers.counters: the flat index i * d + j as (high, low) uint32
  words, against Python's integers, where i * d passes 2^32."""
  from mtl.core.layers import initializers

  ids = np.array([0, 1, 268_435_455, 268_435_456, 299_999_999, 2**32 - 1])
  for d in (1, 16, 64, 2**15):
    high, low = map(np.asarray, initializers.counters(ids, d))
    flat = ids.astype(object)[:, None] * d + np.arange(d)[None, :]
    np.testing.assert_array_equal(high, (flat >> 32).astype(np.uint64))
    np.testing.assert_array_equal(low, (flat & 0xFFFFFFFF).astype(np.uint64))


LR = 0.05
EPS32 = float(np.finfo(np.float32).eps)


def _adagrad_update(g, state, step, d):
  """(u, M): the float64 update of the rule, and its float32 rounding's
  scale (the same with every term's magnitude; the error is k eps M)."""
  acc = g * g + state['acc']
  u = -LR * g / np.sqrt(acc + 1e-7)
  return u, np.abs(u)


def _rowwise_update(g, state, step, d):
  acc = (g * g).mean(-1) + state['acc']
  u = -LR * g / np.sqrt(acc + 1e-7)[:, None]
  return u, np.abs(u)


def _lazy_adam_update(g, state, step, d, b1=0.9, b2=0.999, eps=1e-8):
  t = step + 1
  mu = (1 - b1) * g + b1 * state['mu']
  nu = (1 - b2) * g * g + b2 * state['nu']
  root = np.sqrt(nu / (1 - b2**t)) + eps
  u = -LR * mu / (1 - b1**t) / root
  size = (1 - b1) * np.abs(g) + b1 * np.abs(state['mu'])
  return u, LR * size / (1 - b1**t) / root


def _ftrl_update(g, state, step, w, alpha=LR, beta=1.0):
  n_new = state['n'] + g * g
  sigma = (np.sqrt(n_new) - np.sqrt(state['n'])) / alpha
  denom = (beta + np.sqrt(n_new)) / alpha
  z_new = state['z'] + g - sigma * w
  u = -z_new / denom - w
  # sqrt(n_new) - sqrt(n) cancels: its error is eps sqrt(n_new) absolute.
  size = np.abs(state['z']) + np.abs(g) + 2 * np.sqrt(n_new) * np.abs(w) / alpha
  return u, size / denom + np.abs(w)


# method -> (float64 update, the float32 operations it rounds, at most)
UPDATES = {
  'adagrad': (_adagrad_update, 6),
  'rowwise_adagrad': (_rowwise_update, 10),
  'lazy_adam': (_lazy_adam_update, 12),
  'ftrl': (_ftrl_update, 12),
}


def _update_change_bound(method, g, dg, state, step, w):
  """The largest |u(g') - u(g)| over |g' - g| <= dg (entry-wise), float64.

  Each rule is smooth in g, and dg is ~1e-6 of |g|: on so short an interval
  the update is linear up to O(dg^2), so its extremes are at the ends or a
  point between (5 points). Row-wise Adagrad couples a row's entries through
  mean(g^2): u_j = -lr g_j / sqrt(S) is monotone in g_j and in S, so its
  extremes are at the corners g_j +- dg_j, S at its least and largest."""
  update, _ = UPDATES[method]
  extra = w if method == 'ftrl' else None
  u, _ = update(g, state, step, extra)
  if method == 'rowwise_adagrad':
    lo = np.maximum(np.abs(g) - dg, 0.0)
    out = np.zeros_like(g)
    for s_rows in ((lo * lo).mean(-1), ((np.abs(g) + dg) ** 2).mean(-1)):
      root = np.sqrt(s_rows + state['acc'] + 1e-7)[:, None]
      for sign in (-1.0, 1.0):
        out = np.maximum(out, np.abs(-LR * (g + sign * dg) / root - u))
    return out
  out = np.zeros_like(g)
  for s_ in (-1.0, -0.5, 0.5, 1.0):
    moved, _ = update(g + s_ * dg, state, step, extra)
    out = np.maximum(out, np.abs(moved - u))
  return out


@pytest.mark.parametrize('method', sorted(UPDATES))
def test_duplicate_ids_step_by_step_within_the_derived_float32_bound(method):
  """Ids repeated within and across devices (Zipf, the history sharing the
  item table, its padding), 20 steps. At each step both runs start from
  the replicated run's state, so only one step's difference is measured:
  the row gradients are the same terms summed in another order (each
  device's duplicates first, then the owners' sums).

  The bound, per entry of a table: a sum of k terms in two orders differs
  by at most dg = 2 gamma_k A (Higham (4.4); A: the sum of the terms'
  magnitudes, from the per-occurrence gradients in float64); the method's
  update moves by at most the float64 rule's largest change over |g' - g|
  <= dg (`_update_change_bound`); plus the float32 rounding of the update
  on both runs, 2 k eps M (k: the rule's float32 operations, M: the update
  computed with every term's magnitude), and of the new entry, eps |new|.
  Everything that is not a split table equals bit for bit."""
  from mtl.core import losses as losses_lib
  from mtl.core.architectures.base import training_logits

  model = _model(SEQ)
  tx = _tx(model, method)
  w = WEIGHTINGS['equal']()
  tasks = (Task('t0'), Task('t1'))
  batches = _batches(SEQ, unique=False, seed=5, n=32)
  features = train_step.features_of(batches[0])
  state = train_state.init_train_state(
    model, tx, w, features, num_tasks=2, key=jax.random.key(0)
  )
  rows = {t: lookups(SEQ, 3)[1][t][0] for t in TABLES}
  runs = {}
  for sharded in ((), TABLES):
    step = train_step.make_train_step(
      model, tx._replace(sharded=sharded), w, tasks, steps_per_epoch=1,
      axis_name='data',
    )  # fmt: skip
    specs = None
    if sharded:
      specs = functools.partial(
        sharded_tables.specs, names=sharded, axis_name='data'
      )
    runs[sharded] = parallel.make_parallel_train_step(
      step, backend='shard_map', state_specs=specs
    )

  @jax.jit
  def row_grads(params, batch, rng):
    """Each occurrence's row gradient, {lookup: [B, L, d]}."""
    (dense, zero), variables = sparse_train.differentiable(
      tx, model, params, batch['sparse']
    )

    def total(pert):
      logits, _ = training_logits(
        model, variables((dense, pert)), features_of(batch), rng
      )
      sums, counts = losses_lib.masked_loss_sums(
        logits, batch['labels'], batch['mask'], tasks=tasks
      )
      return jnp.sum(sums / jnp.maximum(counts, 1.0))

    return jax.grad(total)(zero)['embed']

  def sums(params, batch, rng):
    """{table: [V, d]} per row: the summed gradient, the sum of the terms'
    magnitudes (float64) and the count of terms."""
    g = row_grads(params, batch, rng)
    shapes = lookups(SEQ, 3)[1]
    total = {t: np.zeros(shapes[t]) for t in TABLES}
    mags = {t: np.zeros(shapes[t]) for t in TABLES}
    count = {t: np.zeros(shapes[t][0]) for t in TABLES}
    for lk in lookups(SEQ, 3)[0]:
      ids = np.asarray(lk.ids(batch['sparse'])).reshape(-1)
      gi = np.asarray(g[lk.name], np.float64).reshape(len(ids), -1)
      keep = (ids >= 0) & (ids < shapes[lk.table][0])
      np.add.at(total[lk.table], ids[keep], gi[keep])
      np.add.at(mags[lk.table], ids[keep], np.abs(gi[keep]))
      np.add.at(count[lk.table], ids[keep], 1)
    return total, mags, count

  features_of = train_step.features_of
  u = EPS32 / 2
  _, ops = UPDATES[method]
  differing = 0  # Entries the two orders round apart (the case is real).
  for t, batch in enumerate(batches):
    rng = jax.random.fold_in(state.rng, state.step)
    total, mags, count = sums(state.params, batch, rng)
    want, _ = runs[()](jax.tree.map(jnp.copy, state), batch)
    split = sharded_tables.shard_state(jax.tree.map(jnp.copy, state), TABLES, N)
    got, _ = runs[TABLES](split, batch)
    got = sharded_tables.unshard_state(got, rows, N)
    old = state.params['embed']
    for name in TABLES:
      k = count[name][:, None] + N  # Terms, plus the owners' partial sums.
      gamma = k * u / (1 - k * u)
      dg = 2 * gamma * mags[name]
      before = {
        key: np.asarray(v, np.float64)
        for key, v in state.opt_state['sparse'][name].items()
      }
      w_old = np.asarray(old[name], np.float64)
      touched = count[name] > 0
      g = total[name][touched]
      st = {key: v[touched] for key, v in before.items()}
      change = _update_change_bound(
        method, g, dg[touched], st, t, w_old[touched]
      )
      _, size = UPDATES[method][0](
        g, st, t, w_old[touched] if method == 'ftrl' else None
      )
      new = np.asarray(want.params['embed'][name], np.float64)
      bound = np.zeros_like(new)
      bound[touched] = change + 2 * ops * EPS32 * size
      bound += EPS32 * np.abs(new)
      diff = np.abs(np.asarray(got.params['embed'][name], np.float64) - new)
      assert np.all(diff <= bound), (t, name, float(np.max(diff - bound)))
      differing += int(np.sum(diff > 0))
    rest = lambda p: {k: v for k, v in p.items() if k != 'embed'}  # noqa: E731
    jax.tree.map(
      np.testing.assert_array_equal, rest(got.params), rest(want.params)
    )
    state = want
  assert differing > 0


@pytest.mark.usefixtures('fusion_emitters')
def test_dense_adam_on_split_tables_equals_the_replicated_dense_run():
  """`optimizer.sparse.method='adam'` on tables split by rows, 8 devices,
  20 steps, against the replicated run of plain dense `optax.adam` (no
  sparse tables: the tables' gradients are autodiff's scatter-adds,
  psummed): params and Adam's moments bit for bit. Every id at most once
  in a batch, so each row's gradient is one term on both routes; the rows a
  batch does not touch move too (dense Adam), unlike lazy Adam's."""
  model = _model(FLAT)
  batches = _batches(FLAT, unique=True)
  w = WEIGHTINGS['equal']()
  tasks = (Task('t0'), Task('t1'))
  features = train_step.features_of(batches[0])
  dense_tx = optim.make_optimizer('adam', 0.05)
  split_tx = _tx(model, 'adam')._replace(sharded=TABLES)
  rows = {t: lookups(FLAT, 3)[1][t][0] for t in TABLES}
  out = []
  for tx, specs in (
    (dense_tx, None),
    (
      split_tx,
      functools.partial(sharded_tables.specs, names=TABLES, axis_name='data'),
    ),
  ):
    state = train_state.init_train_state(
      model, tx, w, features, num_tasks=2, key=jax.random.key(0)
    )
    if specs:
      state = sharded_tables.shard_state(state, TABLES, N)
    run = parallel.make_parallel_train_step(
      train_step.make_train_step(
        model, tx, w, tasks, steps_per_epoch=1, axis_name='data'
      ),
      backend='shard_map',
      state_specs=specs,
    )
    for b in batches:
      state, _ = run(state, b)
    if specs:
      state = sharded_tables.unshard_state(state, rows, N)
    out.append(state)
  want, got = out
  jax.tree.map(np.testing.assert_array_equal, got.params, want.params)
  adam = [
    s
    for s in jax.tree.leaves(
      want.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)
    )
    if isinstance(s, optax.ScaleByAdamState)
  ]
  assert len(adam) == 1
  for name in TABLES:
    moments = got.opt_state['sparse'][name]
    np.testing.assert_array_equal(moments['mu'], adam[0].mu['embed'][name])
    np.testing.assert_array_equal(moments['nu'], adam[0].nu['embed'][name])
  # Lazy Adam would differ: rows of the first batch untouched by the last
  # moved (and their moments decayed) in the last step all the same.
  first_ids = set(batches[0]['sparse'][:, 0].tolist())
  assert first_ids - set(batches[-1]['sparse'][:, 0].tolist())
