"""The step's `task_grads_parts` against jax.grad of each part alone.

The oracle takes part k of the global batch by hand (the rows whose index
is k mod 3), runs the model on those rows only and takes each task's
gradient of its mean loss there. The step must give the same [3, T, P]
vectors on one device and on 8 emulated devices (8 rows each: 8 is no
multiple of 3, so parts defined per device would differ).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl.core import batch_parts, losses, parallel, train_state, train_step
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting.base import VECTOR, Combined, WeightingMethod

TASKS = (Task('a'), Task('b'))
N_DEV = 8


class Captured(NamedTuple):
  parts: jnp.ndarray  # [3, T, P]


def _capturing():
  """A method that keeps the step's task_grads_parts in its state."""

  def init(num_tasks, num_shared_params=None):
    size = 0 if num_shared_params is None else num_shared_params
    return Captured(jnp.zeros((3, num_tasks, size), jnp.float32))

  def update(weights, state, *, task_grads_parts, task_grads, **unused):
    return Combined(weights, task_grads[0]), Captured(task_grads_parts)

  needs = frozenset({'task_grads', 'task_grads_parts'})
  return WeightingMethod(init, update, needs, VECTOR)


@functools.cache
def _model():
  return make_model(
    'mmoe',
    dict(num_experts=2, expert_hidden=(6,)),
    num_tasks=2,
    vocab_sizes=(5, 7),
    embed_dim=2,
    tower_hidden=(4,),
  )


def _batch(n=64):
  rng = np.random.default_rng(3)
  mask = (rng.random((2, n)) > 0.3).astype(np.float32)
  mask[0, :8] = 0.0  # Uneven counts across devices and parts.
  return {
    'dense': rng.normal(size=(n, 3)).astype(np.float32),
    'sparse': np.stack(
      [rng.integers(0, 5, n), rng.integers(0, 7, n)], axis=1
    ).astype(np.int32),
    'labels': rng.integers(0, 2, (2, n)).astype(np.float32),
    'mask': mask,
  }


def _oracle(params, batch):
  """[3, T, P] float64: each task's gradient on each part alone."""
  model = _model()

  def loss(p, part, t):
    logits = model.apply(
      {'params': p}, train_step.features_of(part), train=False
    )
    sums, counts = losses.masked_loss_sums(
      logits, part['labels'], part['mask'], tasks=TASKS
    )
    return (sums / jnp.maximum(counts, 1.0))[t]

  grad = jax.jit(jax.grad(loss), static_argnums=2)
  n = batch['mask'].shape[1]
  out = []
  for k in range(3):
    rows = np.arange(k, n, 3)
    part = {
      key: (v[:, rows] if key in ('labels', 'mask') else v[rows])
      for key, v in batch.items()
    }
    out.append(
      [
        np.concatenate(
          [
            np.ravel(x)
            for x in jax.tree.leaves(grad(params, part, t)['backbone'])
          ]
        )
        for t in range(2)
      ]
    )
  return np.asarray(out, np.float64)


def _setup(batch):
  model, method = _model(), _capturing()
  tx = optax.sgd(0.1)
  state = train_state.init_train_state(
    model,
    tx,
    method,
    train_step.features_of(batch),
    num_tasks=2,
    key=jax.random.key(0),
  )
  return model, tx, method, state


def test_parts_are_the_global_row_index_mod_three():
  got = jax.pmap(
    lambda x: batch_parts.part_of_rows(x.shape[0], 'i'), axis_name='i'
  )(jnp.zeros((N_DEV, 8)))
  np.testing.assert_array_equal(got, np.arange(64).reshape(8, 8) % 3)
  np.testing.assert_array_equal(
    batch_parts.part_of_rows(7, None), [0, 1, 2] * 2 + [0]
  )


def test_parts_equal_separate_gradients_on_one_device_and_eight():
  batch = _batch()
  model, tx, method, state = _setup(batch)
  want = _oracle(state.params, batch)
  assert want.shape[:2] == (3, 2) and np.linalg.norm(want, axis=2).min() > 0
  # The parts differ from each other (independent samples).
  assert np.linalg.norm(want[0] - want[1]) > 1e-3 * np.linalg.norm(want[0])
  step = train_step.make_train_step(model, tx, method, TASKS, steps_per_epoch=1)
  one, _ = jax.jit(step)(state, batch)
  tol = dict(rtol=1e-5, atol=1e-7 * np.abs(want).max())
  np.testing.assert_allclose(one.weighting_state.parts, want, **tol)
  body = train_step.make_train_step(
    model, tx, method, TASKS, steps_per_epoch=1, axis_name='data'
  )
  run = parallel.make_parallel_train_step(body, backend='pmap')
  _, _, _, state = _setup(batch)
  eight, _ = run(state, batch)
  jax.block_until_ready(eight)
  np.testing.assert_allclose(eight.weighting_state.parts, want, **tol)
