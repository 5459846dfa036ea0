"""The row-sharded embedding lookup against numpy on the whole table.

Oracles: a numpy gather of the whole table (`np.take`, with jnp.take's NaN
for ids out of range), `np.add.at` of the row gradients for the gradient and
the touched rows, and `sparse.SparseOptimizer.apply` on the whole table for
an update of the blocks. Weights and gradients are small integers, so every
sum is exact in float32 whatever its order, and results compare bit for bit.
8 emulated devices (tests/conftest.py); one table, one compile per group.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mtl.core import parallel, sparse
from mtl.core import sharded_embedding as se

N, V, D, n = 8, 203, 3, 16  # R = 26 rows per device, 5 padding rows.
R = -(-V // N)


@pytest.fixture(scope='module')
def mesh():
  devices = jax.devices()[:N]
  assert len(devices) == N
  return parallel.make_mesh(devices)


def whole_table(seed=0):
  return np.random.default_rng(seed).normal(size=(V, D)).astype(np.float32)


def numpy_take(table, ids):
  """jnp.take's gather: ids in [-V, 0) from the end, others NaN rows."""
  ids = np.where(ids < 0, ids + V, ids)
  inside = (ids >= 0) & (ids < V)
  rows = table[np.where(inside, ids, 0)]
  return np.where(inside[..., None], rows, np.nan).astype(np.float32)


def on_mesh(mesh, body, in_specs, out_specs):
  return jax.jit(
    jax.shard_map(
      body,
      mesh=mesh,
      in_specs=in_specs,
      out_specs=out_specs,
      check_vma=False,  # As mtl/core/parallel.py runs its step bodies.
    )
  )


@functools.cache
def lookup_fn(mesh):
  def body(blocks, ids):
    return se.lookup(blocks, ids, 'data', num_rows=V)

  return on_mesh(mesh, body, (P('data'), P('data')), P('data'))


def cases():
  rng = np.random.default_rng(1)
  one_owner = 3 + N * (np.arange(N * n).reshape(N, n) % (V // N))
  spread = np.stack(
    [(np.arange(n) * 13 + 5 * k) % V for k in range(N)]
  )  # Every device's ids over every owner, no bucket above n / N.
  duplicates = rng.choice([7, 8, 9, 200], size=(N, n))
  padding = rng.integers(0, V, (N, n))
  padding[::2, ::3] = 0  # The padding id,
  padding[1::2, 1::4] = 1  # the out-of-vocabulary id.
  out_of_range = rng.integers(0, V, (N, n))
  out_of_range[:, :4] = [-1, -V, V, -V - 1]  # jnp.take: wrap, wrap, NaN, NaN.
  no_ids_for_7 = rng.integers(0, V // N, (N, n)) * N + rng.integers(
    0, N - 1, (N, n)
  )
  return {
    'random': rng.integers(0, V, (N, n)),
    'spread': spread,
    'one owner': one_owner,
    'duplicates': duplicates,
    'padding and oov': padding,
    'out of range': out_of_range,
    'device 7 owns none': no_ids_for_7,
  }


def test_layout_round_trips_and_puts_row_i_on_device_i_mod_n():
  table = whole_table()
  blocks = np.asarray(se.shard_rows(jnp.asarray(table), N))
  assert blocks.shape == (N * R, D)
  for i in range(V):
    np.testing.assert_array_equal(blocks[(i % N) * R + i // N], table[i])
  assert not blocks.reshape(N, R, D)[V % N :, -1].any()  # Padding rows.
  back = se.unshard_rows(jnp.asarray(blocks), V, N)
  np.testing.assert_array_equal(back, table)


def test_each_device_holds_one_nth_of_the_table_within_one_row(mesh):
  blocks = jax.device_put(
    se.shard_rows(jnp.asarray(whole_table()), N),
    NamedSharding(mesh, P('data')),
  )
  sizes = [s.data.nbytes for s in blocks.addressable_shards]
  assert len(sizes) == N
  row = D * 4
  whole = V * row
  assert all(whole / N <= b <= whole / N + row for b in sizes), sizes


@pytest.mark.parametrize('case', list(cases()))
def test_lookup_equals_a_numpy_gather_of_the_whole_table(mesh, case):
  table = whole_table()
  ids = cases()[case].astype(np.int32)
  got = lookup_fn(mesh)(se.shard_rows(jnp.asarray(table), N), ids)
  np.testing.assert_array_equal(got, numpy_take(table, ids))


def test_lookup_under_pmap(mesh):
  table = whole_table()
  ids = cases()['random'].astype(np.int32)
  fn = jax.pmap(
    lambda b, i: se.lookup(b, i, 'data', num_rows=V),
    'data',
    devices=list(mesh.devices.flat),
  )
  blocks = se.shard_rows(jnp.asarray(table), N).reshape(N, R, D)
  np.testing.assert_array_equal(fn(blocks, ids), numpy_take(table, ids))


def test_population_members_vmapped_each_look_up_their_own_table(mesh):
  tables = [whole_table(seed) for seed in range(3)]
  ids = np.stack([cases()[c] for c in ('random', 'one owner', 'spread')])
  ids = ids.astype(np.int32)
  blocks = jnp.stack([se.shard_rows(jnp.asarray(t), N) for t in tables])
  fn = on_mesh(
    mesh,
    jax.vmap(lambda b, i: se.lookup(b, i, 'data', num_rows=V)),
    (P(None, 'data'), P(None, 'data')),
    P(None, 'data'),
  )
  got = fn(blocks, ids)
  for k, table in enumerate(tables):
    np.testing.assert_array_equal(got[k], numpy_take(table, ids[k]))


def test_spread_ids_take_the_cheap_route_and_one_owner_the_full_one():
  """The two routes the cases cover: no bucket of 'spread' exceeds the
  capacity, every device of 'one owner' overflows it."""
  c = se.capacity(n, N)
  assert c < n
  ids = cases()
  for k in range(N):
    counts = np.bincount(np.unique(ids['spread'][k]) % N, minlength=N)
    assert counts.max() <= c
    assert len(np.unique(ids['one owner'][k])) > c


def test_bytes_sent_are_those_of_the_compiled_all_to_alls(mesh):
  """Each all_to_all keeps 1/N of its buffer and sends the rest; the
  program holds both routes (cheap, then full), two all_to_alls each."""
  ids = cases()['random'].astype(np.int32)
  blocks = se.shard_rows(jnp.asarray(whole_table()), N)
  text = lookup_fn(mesh).lower(blocks, ids).as_text()
  found = re.findall(r'all_to_all.*: \(tensor<([0-9x]+)x(i32|f32)>\)', text)
  assert len(found) == 4, found
  sent = [
    (N - 1) * np.prod([int(x) for x in shape.split('x')]) // N * 4
    for shape, _ in found
  ]
  cheap = se.bytes_sent(n, N, D, 4)
  full = se.bytes_sent(n, N, D, 4, overflow=True)
  assert sorted([sent[0] + sent[1], sent[2] + sent[3]]) == [cheap, full]
  assert cheap == (N - 1) * 4 * (4 + D * 4)  # C = 2 n / N = 4.


def test_a_device_with_no_ids(mesh):
  table = whole_table()
  ids = np.zeros((N, 0), np.int32)
  got = lookup_fn(mesh)(se.shard_rows(jnp.asarray(table), N), ids)
  assert got.shape == (N, 0, D)


def test_bfloat16_blocks_look_up_their_own_bits(mesh):
  table = jnp.asarray(whole_table(), jnp.bfloat16)
  ids = cases()['random'].astype(np.int32)
  got = lookup_fn(mesh)(se.shard_rows(table, N), ids)
  assert got.dtype == jnp.bfloat16
  want = numpy_take(np.asarray(table, np.float32), ids)
  np.testing.assert_array_equal(np.asarray(got, np.float32), want)


@functools.cache
def grad_fn(mesh):
  def body(blocks, ids, weights):
    # Each device's share of the loss, differentiated per device as the
    # train step does: the backward routes every device's row gradients
    # to the owners.
    def loss(b):
      rows = se.lookup(b, ids, 'data', num_rows=V)
      return jnp.sum(jnp.where(jnp.isnan(rows), 0.0, rows) * weights)

    return jax.grad(loss)(blocks)

  specs = (P('data'), P('data'), P('data'))
  return on_mesh(mesh, body, specs, P('data'))


@pytest.mark.parametrize('case', ['random', 'one owner', 'out of range'])
def test_gradient_equals_the_replicated_lookups(mesh, case):
  table = whole_table()
  ids = cases()[case].astype(np.int32)
  weights = np.random.default_rng(2).integers(-3, 4, (N, n, D))
  weights = weights.astype(np.float32)

  def replicated(t):
    rows = jnp.take(t, ids, axis=0)
    return jnp.sum(jnp.where(jnp.isnan(rows), 0.0, rows) * weights)

  wrapped = np.where(ids < 0, ids + V, ids)
  inside = (wrapped >= 0) & (wrapped < V)
  want = np.zeros((V, D), np.float32)
  np.add.at(want, wrapped[inside], weights[inside])
  # The loss is checked against numpy, then its gradient against numpy's.
  # Float32 summation of k terms errs by at most (k - 1) 2^-24 sum |terms|.
  terms = np.nan_to_num(numpy_take(table, ids)).astype(np.float64) * weights
  bound = (terms.size - 1) * 2.0**-24 * np.abs(terms).sum()
  np.testing.assert_allclose(replicated(table), terms.sum(), atol=bound)
  np.testing.assert_array_equal(jax.grad(replicated)(table), want)
  got = grad_fn(mesh)(se.shard_rows(jnp.asarray(table), N), ids, weights)
  np.testing.assert_array_equal(se.unshard_rows(got, V, N), want)


@functools.cache
def touched_fn(mesh):
  def body(ids, grads):
    rows = se.touched_rows(ids, grads, 'data', num_rows=V)
    return rows.ids, rows.grads

  return on_mesh(mesh, body, (P('data'), P('data')), P('data'))


@pytest.mark.parametrize('case', ['random', 'one owner', 'padding and oov'])
def test_touched_rows_are_each_owners_rows_with_summed_gradients(mesh, case):
  ids = cases()[case].astype(np.int32)
  grads = np.random.default_rng(3).integers(-3, 4, (N, n, D))
  grads = grads.astype(np.float32)
  got_ids, got_grads = touched_fn(mesh)(ids, grads)
  got_ids = np.asarray(got_ids).reshape(N, -1)
  got_grads = np.asarray(got_grads).reshape(N, got_ids.shape[1], D)
  dense = np.zeros((V, D), np.float32)
  np.add.at(dense, ids.reshape(-1), grads.reshape(-1, D))
  touched = np.unique(ids)
  for k in range(N):
    mine = touched[touched % N == k]
    keep = got_ids[k] < R
    np.testing.assert_array_equal(got_ids[k][keep], mine // N)
    np.testing.assert_array_equal(got_grads[k][keep], dense[mine])
    assert not got_grads[k][~keep].any()
    assert len(set(got_ids[k])) == got_ids.shape[1]  # Padding distinct.


def test_owners_updating_their_blocks_equal_the_whole_table_update(mesh):
  opt = sparse.lazy_adam(0.1)
  table = jnp.asarray(whole_table())
  ids = cases()['duplicates'].astype(np.int32)
  grads = np.random.default_rng(4).integers(-3, 4, (N, n, D))
  grads = grads.astype(np.float32)
  step = jnp.int32(0)
  want, want_state = jax.jit(
    lambda t, s: opt.apply(t, s, ids, grads, step=step)
  )(table, opt.init(table))

  def body(block, state, ids, grads):
    rows = se.touched_rows(ids, grads, 'data', num_rows=V)
    return opt.update(block, state, rows, step=step)

  blocks = se.shard_rows(table, N)
  specs = (P('data'), P('data'), P('data'), P('data'))
  fn = on_mesh(mesh, body, specs, P('data'))
  got, got_state = fn(blocks, opt.init(blocks), ids, grads)
  np.testing.assert_array_equal(se.unshard_rows(got, V, N), want)
  for key in ('mu', 'nu'):
    np.testing.assert_array_equal(
      se.unshard_rows(got_state[key], V, N), want_state[key]
    )
