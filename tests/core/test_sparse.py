"""Sparse embedding updates against optax on the dense gradient and numpy.

Oracles: `optax.adagrad` / `optax.adam` on the dense [V, d] gradient (numpy
`np.add.at` of the row gradients), a float64 numpy row-wise Adagrad and lazy
Adam, the one-device update (for 8 devices) and a loop (for vmap). Untouched
rows and their optimizer state are compared bit for bit.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from mtl.core import parallel, sparse

V, D = 12, 4
TOL = {'rtol': 1e-6, 'atol': 1e-6}  # float32 rounding of values ~1


def batches(seed, steps, n=9, high=V):
  """(ids [n], row grads [n, D]) per step; ids repeat and miss some rows."""
  rng = np.random.default_rng(seed)
  return [
    (
      rng.integers(0, high, n).astype(np.int32),
      rng.normal(size=(n, D)).astype(np.float32),
    )
    for _ in range(steps)
  ]


def dense_grad(ids, grads, rows=V):
  out = np.zeros((rows, grads.shape[-1]), np.float64)
  np.add.at(out, ids, grads.astype(np.float64))
  return out


def init_table(seed=0, rows=V, dim=D):
  return jnp.asarray(
    np.random.default_rng(seed).normal(size=(rows, dim)), jnp.float32
  )


@functools.cache
def jitted_apply(opt):
  return jax.jit(
    lambda t, s, i, g, step: opt.apply(t, s, i, g, step=step),
    donate_argnums=(0, 1),
  )


def run_sparse(opt, table, data):
  state = opt.init(table)
  table = jnp.array(table)  # A copy: the input is donated.
  fn = jitted_apply(opt)
  for step, (ids, grads) in enumerate(data):
    table, state = fn(table, state, ids, grads, step)
  return np.asarray(table), jax.tree.map(np.asarray, state)


def run_dense(tx, table, data):
  state = tx.init(table)
  update = jax.jit(tx.update)
  for ids, grads in data:
    g = jnp.asarray(dense_grad(ids, grads), jnp.float32)
    updates, state = update(g, state, table)
    table = optax.apply_updates(table, updates)
  return np.asarray(table), state


def test_combine_sums_duplicates_as_the_dense_gradient():
  ids = np.array([[3, 1, 3], [7, 3, 1]], np.int32)
  grads = np.random.default_rng(1).normal(size=(2, 3, D)).astype(np.float32)
  rows = jax.jit(functools.partial(sparse.combine, num_rows=V))(ids, grads)
  np.testing.assert_array_equal(rows.ids[:3], [1, 3, 7])
  assert (np.asarray(rows.ids[3:]) >= V).all()  # Padding, distinct.
  assert len(set(np.asarray(rows.ids).tolist())) == 6
  np.testing.assert_array_equal(rows.grads[3:], 0)
  want = dense_grad(ids.ravel(), grads.reshape(-1, D))
  np.testing.assert_allclose(rows.grads[:3], want[[1, 3, 7]], **TOL)
  # The dense gradient of the gather is the same sum (and drops bad ids).
  table = init_table()
  bad = np.array([2, -1, V, 2], np.int32)
  ct = np.ones((4, D), np.float32)

  @jax.jit  # One program, not one compile per op.
  def grad_and_combine(table, bad, ct):
    g = jax.grad(lambda t: jnp.sum(sparse.lookup(t, bad) * ct))(table)
    return g, sparse.combine(bad, ct, num_rows=V)

  g, rows = grad_and_combine(table, bad, ct)
  np.testing.assert_array_equal(rows.ids[0], 2)
  np.testing.assert_array_equal(rows.grads[0], g[2])
  np.testing.assert_array_equal(rows.grads[1:], 0)
  assert (np.asarray(rows.ids[1:]) >= V).all()


def test_adagrad_is_dense_adagrad():
  """Dense Adagrad leaves zero-gradient rows alone: the whole table agrees."""
  data = batches(0, 4)
  lr = optax.linear_schedule(0.3, 0.1, 4)
  table, state = run_sparse(sparse.adagrad(lr), init_table(), data)
  want, want_state = run_dense(optax.adagrad(lr), init_table(), data)
  np.testing.assert_allclose(table, want, **TOL)
  np.testing.assert_allclose(state['acc'], want_state[0].sum_of_squares, **TOL)
  untouched = np.setdiff1d(np.arange(V), np.concatenate([i for i, _ in data]))
  assert untouched.size  # The batches leave some rows out.
  np.testing.assert_array_equal(table[untouched], init_table()[untouched])
  np.testing.assert_array_equal(state['acc'][untouched], np.float32(0.1))


def numpy_rowwise_adagrad(table, data, lr, init=0.1, eps=1e-7):
  w = np.asarray(table, np.float64).copy()
  acc = np.full(w.shape[0], init)
  for ids, grads in data:
    g = dense_grad(ids, grads, w.shape[0])
    touched = np.unique(ids)
    acc[touched] += np.mean(g[touched] ** 2, axis=-1)
    w[touched] -= lr * g[touched] / np.sqrt(acc[touched, None] + eps)
  return w, acc


def test_rowwise_adagrad():
  data = batches(1, 4)
  table, state = run_sparse(sparse.rowwise_adagrad(0.2), init_table(), data)
  want, want_acc = numpy_rowwise_adagrad(init_table(), data, 0.2)
  np.testing.assert_allclose(table, want, **TOL)
  np.testing.assert_allclose(state['acc'], want_acc, **TOL)
  assert state['acc'].shape == (V,)
  untouched = np.setdiff1d(np.arange(V), np.concatenate([i for i, _ in data]))
  np.testing.assert_array_equal(table[untouched], init_table()[untouched])
  np.testing.assert_array_equal(state['acc'][untouched], np.float32(0.1))
  # One column: the row's mean is the element, so it is optax.adagrad.
  data1 = [(i, g[:, :1]) for i, g in data]
  table1 = init_table(dim=1)
  got, _ = run_sparse(sparse.rowwise_adagrad(0.2), table1, data1)
  np.testing.assert_allclose(
    got, run_dense(optax.adagrad(0.2), table1, data1)[0], **TOL
  )


def test_lazy_adam_is_adam_when_every_row_is_touched():
  lr = optax.cosine_decay_schedule(0.05, 5)
  data = [
    (np.concatenate([np.random.default_rng(s).permutation(V), i]), None)
    for s, (i, _) in enumerate(batches(2, 5, n=4))
  ]
  rng = np.random.default_rng(3)
  data = [(i, rng.normal(size=(i.size, D)).astype(np.float32)) for i, _ in data]
  table, state = run_sparse(sparse.lazy_adam(lr), init_table(), data)
  want, want_state = run_dense(optax.adam(lr), init_table(), data)
  np.testing.assert_allclose(table, want, **TOL)
  np.testing.assert_allclose(state['mu'], want_state[0].mu, **TOL)
  np.testing.assert_allclose(state['nu'], want_state[0].nu, **TOL)


def numpy_lazy_adam(table, data, lr, b1=0.9, b2=0.999, eps=1e-8):
  w = np.asarray(table, np.float64).copy()
  m, v = np.zeros_like(w), np.zeros_like(w)
  for t, (ids, grads) in enumerate(data, start=1):
    g = dense_grad(ids, grads, w.shape[0])
    r = np.unique(ids)  # Moments and rows of the touched rows only.
    m[r] = b1 * m[r] + (1 - b1) * g[r]
    v[r] = b2 * v[r] + (1 - b2) * g[r] ** 2
    # Global t. The corrections as float32 computes them: 1 - 0.999 loses
    # 4 of float32's digits, which sqrt(v) carries into the step.
    bc1, bc2 = (1 - np.float32(b) ** np.float32(t) for b in (b1, b2))
    m_hat, v_hat = m[r] / np.float64(bc1), v[r] / np.float64(bc2)
    w[r] -= lr * m_hat / (np.sqrt(v_hat) + eps)
  return w, m, v


def test_lazy_adam_touches_only_the_batch_rows():
  data = batches(4, 4)
  table, state = run_sparse(sparse.lazy_adam(0.1), init_table(), data)
  want, m, v = numpy_lazy_adam(init_table(), data, 0.1)
  np.testing.assert_allclose(table, want, **TOL)
  np.testing.assert_allclose(state['mu'], m, **TOL)
  np.testing.assert_allclose(state['nu'], v, **TOL)
  untouched = np.setdiff1d(np.arange(V), np.concatenate([i for i, _ in data]))
  np.testing.assert_array_equal(table[untouched], init_table()[untouched])
  np.testing.assert_array_equal(state['mu'][untouched], 0)
  np.testing.assert_array_equal(state['nu'][untouched], 0)
  # Dense Adam moves a row the last step did not touch (m/sqrt(v) of its
  # decayed moments); lazy Adam leaves it where its last touch put it.
  dense, _ = run_dense(optax.adam(0.1), init_table(), data)
  stale = np.setdiff1d(np.concatenate([i for i, _ in data[:-1]]), data[-1][0])
  assert stale.size
  before, _ = run_sparse(sparse.lazy_adam(0.1), init_table(), data[:-1])
  np.testing.assert_array_equal(table[stale], before[stale])
  assert np.abs(dense[stale] - table[stale]).min() > 1e-3


def test_scale_and_apply_if():
  opt = sparse.lazy_adam(0.1)
  (ids, grads), table = batches(5, 1)[0], init_table()
  state = opt.init(table)

  @jax.jit  # The three updates in one program, not one compile per op.
  def updates(table, state, ids, grads, no):
    return (
      opt.apply(table, state, ids, grads, step=0, apply_if=no),
      opt.apply(table, state, ids, grads, step=0, scale=0.5)[0],
      opt.apply(table, state, ids, grads, step=0)[0],
    )

  same, half, full = updates(table, state, ids, grads, jnp.array(False))
  np.testing.assert_array_equal(same[0], table)
  np.testing.assert_array_equal(same[1]['mu'], 0)
  np.testing.assert_allclose(half - table, 0.5 * (full - table), **TOL)


def test_donated_table_is_updated_in_place():
  opt = sparse.rowwise_adagrad(0.1)
  table = init_table(rows=4096)
  state = opt.init(table)
  pointer = table.unsafe_buffer_pointer()
  ids, grads = batches(6, 1)[0]
  new, _ = jitted_apply(opt)(table, state, ids, grads, 0)
  assert new.unsafe_buffer_pointer() == pointer


@pytest.mark.parametrize('backend', parallel.BACKENDS)
def test_eight_devices_equal_one(backend):
  opt = sparse.lazy_adam(0.1)
  devices = jax.devices()[:8]
  assert len(devices) == 8
  table = init_table(rows=40)
  state = opt.init(table)
  data = batches(7, 2, n=64, high=40)  # 8 ids per device, repeated across.

  def body(table, state, ids, grads, step):
    return opt.apply(table, state, ids, grads, step=step, axis_name='data')

  if backend == 'pmap':
    fn = jax.pmap(body, 'data', in_axes=(None, None, 0, 0, None), out_axes=None)
  else:
    mesh = parallel.make_mesh(devices)
    fn = jax.jit(
      jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(P(), P(), P('data'), P('data'), P()),
        out_specs=P(),
        check_vma=False,
      )
    )
  one_t, one_s = run_sparse(opt, table, data)
  for step, (ids, grads) in enumerate(data):
    if backend == 'pmap':
      ids, grads = ids.reshape(8, -1), grads.reshape(8, -1, D)
    table, state = fn(table, state, ids, grads, step)
  np.testing.assert_array_equal(table, one_t)
  np.testing.assert_array_equal(state['mu'], one_s['mu'])
  np.testing.assert_array_equal(state['nu'], one_s['nu'])


@pytest.mark.usefixtures('fusion_emitters')
def test_vmap_over_members_equals_a_loop():
  opt = sparse.adagrad(0.1)
  tables = jnp.stack([init_table(0), init_table(1)])
  states = jax.vmap(opt.init)(tables)
  (i0, g0), (i1, g1) = batches(8, 2)
  fn = jax.jit(
    jax.vmap(lambda t, s, i, g: opt.apply(t, s, i, g, step=jnp.int32(0)))
  )
  got, got_state = fn(tables, states, np.stack([i0, i1]), np.stack([g0, g1]))
  for k, (i, g) in enumerate([(i0, g0), (i1, g1)]):
    want, want_state = run_sparse(opt, tables[k], [(i, g)])
    np.testing.assert_array_equal(got[k], want)
    np.testing.assert_array_equal(got_state['acc'][k], want_state['acc'])


class Tiny(nn.Module):
  """An embedding, the rows exposed to differentiation (nn.perturb)."""

  @nn.compact
  def __call__(self, ids):
    table = self.param('table', nn.initializers.normal(1.0), (V, D))
    rows = self.perturb('rows', sparse.lookup(table, ids))
    return jnp.tanh(rows.sum(-1) * nn.Dense(1)(rows)[..., 0]).sum()


def test_the_step_differentiates_the_rows_not_the_table():
  """The integration recipe: row grads from `perturb`, the table closed over.

  On a batch that touches every row, lazy Adam of the row gradients equals
  optax.adam of the table's dense gradient.
  """
  model = Tiny()
  ids = np.concatenate([np.arange(V), [0, 5, 5]]).astype(np.int32)
  # Each side is one jitted program (op by op, every op compiled: 6 s).
  variables = jax.jit(model.init)(jax.random.key(0), ids)
  params, perturbations = variables['params'], variables['perturbations']
  table = params['table']

  @jax.jit
  def dense_adam(params):
    dense_g = jax.grad(lambda p: model.apply({'params': p}, ids))(params)
    tx = optax.adam(0.1)
    updates, _ = tx.update(dense_g['table'], tx.init(params['table']))
    return optax.apply_updates(params['table'], updates)

  want = dense_adam(params)

  others = {k: v for k, v in params.items() if k != 'table'}

  @jax.jit
  def sparse_step(others, perturbations):
    def loss(others, perturbations):  # The table is a constant here.
      p = dict(others, table=table)
      return model.apply({'params': p, 'perturbations': perturbations}, ids)

    _, row_g = jax.grad(loss, argnums=(0, 1))(others, perturbations)
    opt = sparse.lazy_adam(0.1)
    return opt.apply(table, opt.init(table), ids, row_g['rows'], step=0)[0]

  got = sparse_step(others, perturbations)
  np.testing.assert_allclose(got, want, **TOL)
