"""The train step against a hand-derived gradient, across devices, and in
its scanned form."""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl.core import train_state, train_step
from mtl.core.architectures.base import Backbone
from mtl.core.tasks import Task
from mtl.core.weighting.fixed import fixed
from mtl.data import pipeline

TASKS = (Task('a'), Task('b'))


class Linear(nn.Module):
  """logits [T, B] = (x W)^T: a model whose gradient is known in closed form.

  Its `backbone` gives the step the architecture hooks' defaults (what the
  tasks share: 'backbone'; no extra losses), as `MultiTaskModel`'s does.
  """

  backbone: ClassVar = Backbone()
  num_tasks: int

  @nn.compact
  def __call__(self, features, *, train):
    del train
    dense = nn.Dense(self.num_tasks, use_bias=False, name='w')
    return dense(features['dense']).T


def _batch(rng, n, d=5):
  return {
    'dense': rng.normal(size=(n, d)).astype(np.float32),
    'sparse': np.zeros((n, 0), np.int32),
    'labels': rng.integers(0, 2, (2, n)).astype(np.float32),
    'mask': (rng.random((2, n)) > 0.25).astype(np.float32),
  }


def _setup(weights=(2.0, 0.5), lr=0.1):
  model = Linear(2)
  tx = optax.sgd(lr)
  method = fixed(weights)
  batch = _batch(np.random.default_rng(0), 16)
  state = train_state.init_train_state(
    model,
    tx,
    method,
    train_step.features_of(batch),
    num_tasks=2,
    key=jax.random.key(0),
  )
  return model, tx, method, batch, state


def test_one_step_equals_hand_derived_sgd_update():
  model, tx, method, batch, state = _setup()
  step = jax.jit(
    train_step.make_train_step(model, tx, method, TASKS, steps_per_epoch=1)
  )
  new_state, metrics = step(state, batch)
  # d/dW of sum_t w_t * mean_{masked rows} BCE(x W_t, y_t)
  #   = column t: w_t * x^T (m_t * (sigmoid(x W_t) - y_t)) / sum(m_t).
  w = np.asarray(state.params['w']['kernel'])
  x, y, m = batch['dense'], batch['labels'], batch['mask']
  grad = np.zeros_like(w)
  for t, wt in enumerate((2.0, 0.5)):
    p = 1 / (1 + np.exp(-(x @ w[:, t])))
    grad[:, t] = wt * x.T @ (m[t] * (p - y[t])) / m[t].sum()
  np.testing.assert_allclose(
    new_state.params['w']['kernel'], w - 0.1 * grad, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(metrics['weight'], [2.0, 0.5])
  assert int(new_state.step) == 1


def test_pmap_over_8_devices_equals_one_device():
  model, tx, method, batch, state = _setup()
  step = train_step.make_train_step(model, tx, method, TASKS, steps_per_epoch=1)
  want, want_m = jax.jit(step)(state, batch)
  n_dev = jax.local_device_count()
  assert n_dev == 8, 'tests/conftest.py emulates 8 CPU devices'
  # Unevenly masked shards: the per-shard loss must use the global count.
  sharded = {
    'dense': batch['dense'].reshape(n_dev, -1, batch['dense'].shape[1]),
    'sparse': batch['sparse'].reshape(n_dev, 2, 0),
    'labels': batch['labels'].reshape(2, n_dev, -1).transpose(1, 0, 2),
    'mask': batch['mask'].reshape(2, n_dev, -1).transpose(1, 0, 2),
  }
  assert len(set(sharded['mask'].sum(axis=(1, 2)).tolist())) > 1
  replicated = jax.tree.map(lambda a: jnp.stack([a] * n_dev), state)
  pstep = jax.pmap(
    train_step.make_train_step(
      model, tx, method, TASKS, steps_per_epoch=1, axis_name='data'
    ),
    axis_name='data',
  )
  got, got_m = pstep(replicated, sharded)
  np.testing.assert_allclose(
    got.params['w']['kernel'][0], want.params['w']['kernel'], rtol=1e-5
  )
  np.testing.assert_allclose(got_m['loss'][3], want_m['loss'], rtol=1e-5)


def test_scanned_device_steps_equal_host_steps():
  model, tx, method, _, state = _setup()
  split = _batch(np.random.default_rng(3), 40)
  step = train_step.make_train_step(model, tx, method, TASKS, steps_per_epoch=5)
  key = jax.random.key(7)
  perm = pipeline.epoch_permutation(key, 0, 40)
  host_state = state
  host_step = jax.jit(step)
  for batch in pipeline.host_batches(split, np.asarray(perm), 8):
    host_state, _ = host_step(host_state, batch)
  run = jax.jit(train_step.make_scanned_steps(step, batch_size=8, num_steps=5))
  scan_state, metrics = run(state, jax.device_put(split), perm, 0)
  assert metrics['loss'].shape == (5, 2)
  np.testing.assert_allclose(
    scan_state.params['w']['kernel'],
    host_state.params['w']['kernel'],
    rtol=1e-6,
  )
  assert int(scan_state.step) == int(host_state.step) == 5


def test_epoch_permutation_is_a_pure_function_of_key_and_epoch():
  key = jax.random.key(1)
  a = np.asarray(pipeline.epoch_permutation(key, 3, 100))
  b = np.asarray(pipeline.epoch_permutation(key, 3, 100))
  c = np.asarray(pipeline.epoch_permutation(key, 4, 100))
  np.testing.assert_array_equal(a, b)
  assert sorted(a.tolist()) == list(range(100))
  assert not np.array_equal(a, c)


def test_large_split_permutation_is_uniform_pure_and_in_place(monkeypatch):
  """Above LARGE_SPLIT rows the order is numpy's in-place shuffle: a pure
  function of (key, epoch), a permutation, and uniform. Oracle for the
  last: over 6,000 (key, epoch) draws of N = 4 (24 orders), every order's
  count against its expectation 250 (chi-square, 23 dof, p = 0.001 at
  49.7)."""
  monkeypatch.setattr(pipeline, 'LARGE_SPLIT', 3)
  key = jax.random.key(1)
  a = pipeline.epoch_permutation(key, 3, 100)
  assert isinstance(a, np.ndarray) and a.dtype == np.int32
  np.testing.assert_array_equal(a, pipeline.epoch_permutation(key, 3, 100))
  assert sorted(a.tolist()) == list(range(100))
  assert not np.array_equal(a, pipeline.epoch_permutation(key, 4, 100))
  assert not np.array_equal(
    a, pipeline.epoch_permutation(jax.random.key(2), 3, 100)
  )
  counts = {}
  for seed in range(60):
    for epoch in range(100):
      p = pipeline.epoch_permutation(jax.random.key(seed), epoch, 4)
      counts[tuple(p)] = counts.get(tuple(p), 0) + 1
  assert len(counts) == 24
  observed = np.array(list(counts.values()))
  assert ((observed - 250.0) ** 2 / 250.0).sum() < 49.7
  # Up to LARGE_SPLIT rows the order is jax's, as recorded runs used.
  np.testing.assert_array_equal(
    pipeline.epoch_permutation(key, 3, 3),
    jax.random.permutation(jax.random.fold_in(key, 3), 3),
  )


def test_scanned_eval_sums_padded_batches():
  model, _, _, _, state = _setup()
  split = _batch(np.random.default_rng(4), 21)
  eval_step = train_step.make_eval_step(model, TASKS, num_bins=64)
  run = jax.jit(train_step.make_scanned_eval(eval_step, batch_size=8))
  counts = run(state.params, jax.device_put(pipeline.pad_split(split, 8)))
  whole = eval_step(state.params, split)
  np.testing.assert_allclose(counts['loss_sum'], whole['loss_sum'], rtol=1e-5)
  np.testing.assert_array_equal(counts['count'], split['mask'].sum(1))
  np.testing.assert_array_equal(counts['pos'], whole['pos'])


def test_scanned_eval_in_chunks_gives_the_bits_of_the_whole_split():
  """A split evaluated chunk by chunk, the running total carried (how a
  streamed split is evaluated), sums in the order of one pass: same bits."""
  model, _, _, _, state = _setup()
  split = pipeline.pad_split(_batch(np.random.default_rng(5), 45), 8)
  eval_step = train_step.make_eval_step(model, TASKS, num_bins=64)
  run = jax.jit(train_step.make_scanned_eval(eval_step, batch_size=8))
  whole = run(state.params, split)
  for cut in ([16, 24, 48], [8, 40, 48], [48]):  # Chunk ends, in rows.
    total, start = None, 0
    for stop in cut:
      chunk = pipeline.take_rows(split, np.arange(start, stop))
      total, start = run(state.params, chunk, total), stop
    jax.tree.map(np.testing.assert_array_equal, total, whole)
  # The carried total is a running sum: batch by batch, in numpy.
  one = jax.jit(eval_step)
  want = None
  for k in range(6):
    c = one(
      state.params, pipeline.take_rows(split, np.arange(8 * k, 8 * k + 8))
    )
    want = c if want is None else jax.tree.map(np.add, want, c)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), whole, want
  )


def test_skip_nonfinite_leaves_the_state_and_counts_the_step():
  model, _, method, batch, _ = _setup()
  tx = optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=3)
  state = train_state.init_train_state(
    model,
    tx,
    method,
    train_step.features_of(batch),
    num_tasks=2,
    key=jax.random.key(0),
  )
  step = jax.jit(
    train_step.make_train_step(
      model, tx, method, TASKS, steps_per_epoch=1, skip_nonfinite=True
    )
  )
  bad = dict(batch, dense=batch['dense'].copy())
  bad['dense'][3, 1] = np.nan
  after_bad, m_bad = step(state, bad)
  assert int(m_bad['nonfinite']) == 1
  assert int(after_bad.step) == 1  # Counted as a step, params untouched.
  np.testing.assert_array_equal(
    after_bad.params['w']['kernel'], state.params['w']['kernel']
  )
  assert int(after_bad.opt_state.total_notfinite) == 1
  # The next good batch trains exactly as if the bad one never came.
  want, _ = step(state, batch)
  got, m_good = step(after_bad, batch)
  assert int(m_good['nonfinite']) == 0
  np.testing.assert_allclose(
    got.params['w']['kernel'], want.params['w']['kernel'], rtol=1e-6
  )


def test_finite_guard_skips_then_stops_after_max_consecutive():
  from mtl.shell.finite import FiniteGuard, NonFinite

  guard = FiniteGuard(TASKS, skip=True, max_consecutive=2)
  nan = float('nan')
  guard.add(0, {'loss': np.array([[0.1, 0.2], [nan, 0.2], [0.1, 0.2]])})
  guard.check()
  assert guard.skipped == 1
  guard.add(3, {'loss': np.array([[0.1, nan], [0.3, np.inf]])})
  with pytest.raises(NonFinite, match="for task 'b' at step 5: 2 non-finite"):
    guard.check()
  strict = FiniteGuard(TASKS, skip=False, max_consecutive=2)
  strict.add(10, {'loss': np.array([[0.1, 0.2], [0.3, nan]])})
  with pytest.raises(
    NonFinite, match="task 'b' at step 12 .set skip_nonfinite"
  ):
    strict.check()
