"""The train step's `task_grad_unit_distances` (IMTL-G's input) against
||u_i - u_j||^2 of separately computed task gradients in float64, and its
sparse-table path (ESMM shares only the embeddings) against the dense one."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtl.core import task_grads as tg
from mtl.core.weighting import WEIGHTINGS
from mtl.core.weighting.base import WeightingMethod
from tests.core import test_sparse_training as sparse
from tests.core.test_task_grads import _batch, _flat, _model, _one_step
from tests.core.test_task_grads import _separate_grads_fn as separate_grads


class Seen(NamedTuple):
  distances: jnp.ndarray


def _recorder():
  def init(num_tasks):
    return Seen(jnp.zeros((num_tasks, num_tasks)))

  def update(weights, state, *, task_grad_unit_distances, **unused):
    return weights, Seen(task_grad_unit_distances)

  return WeightingMethod(init, update, frozenset({'task_grad_unit_distances'}))


def test_step_gives_unit_distances_of_separate_task_gradients():
  model, batch = _model('mmoe'), _batch()
  state, (new_state, _) = _one_step(model, _recorder(), batch)
  g = separate_grads('mmoe')(state.params, batch)
  flat = np.stack([_flat(gt['backbone']) for gt in g]).astype(np.float64)
  u = flat / np.linalg.norm(flat, axis=1, keepdims=True)
  want = np.sum((u[:, None] - u[None, :]) ** 2, axis=-1)
  got = np.asarray(new_state.weighting_state.distances)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)


def test_unit_distances_keep_precision_for_nearly_parallel_gradients():
  # cos ~ 1 - 5e-7: 2 - 2 cos from a float32 Gram is off by ~10 %; from
  # the gradients it is within float32's relative precision.
  base = np.random.default_rng(0).normal(size=(1, 64))
  other = np.random.default_rng(1).normal(size=(1, 64))
  g = np.concatenate([base, 3 * (base + 1e-3 * other)])
  u = g / np.linalg.norm(g, axis=1, keepdims=True)
  want = np.sum((u[0] - u[1]) ** 2)
  g32 = jnp.asarray(g, jnp.float32)
  norms = jnp.linalg.norm(g32, axis=1)
  got = tg.unit_distances({'w': g32.reshape(2, 8, 8)}, norms)
  np.testing.assert_allclose(got, [[0, want], [want, 0]], rtol=1e-3)
  # A zero gradient: u = 0, so its distance to any unit vector is 1.
  zero = tg.unit_distances({'w': g32.at[1].set(0.0)}, norms.at[1].set(0.0))
  np.testing.assert_allclose(zero, [[0, 1], [1, 0]], rtol=1e-6)


def test_sparse_table_distances_equal_dense_ones():
  # ESMM with IMTL-G: E from the sparse table's combined per-task rows.
  model = sparse._model('esmm')
  rng = np.random.default_rng(2)
  batches = [
    sparse._fit(sparse._batch(rng, sparse.PLAIN, skip=(6,)), model)
    for _ in range(2)
  ]
  w = WEIGHTINGS['imtl_g']()
  table = {'tables': ('table',), 'method': 'adagrad'}
  _, want = sparse._run(model, sparse._tx('adagrad', model), w, batches)
  _, got = sparse._run(
    model, sparse._tx('adagrad', model, sparse=table), w, batches
  )
  sparse._close(got.params, want.params)
  assert jax.tree.leaves(got.params)
