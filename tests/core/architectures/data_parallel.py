"""An architecture's data-parallel train steps against single-device ones.

The oracle is the single-device step (`axis_name=None`, no collectives) on
the whole global batch, as in tests/core/test_parallel.py (which runs MMoE
only):
both backends on the 8 emulated devices (tests/conftest.py) must reproduce
its params, losses and weights after a few steps, with uneven task masks
over the shards. Models are tiny; one compile per backend.
"""

import jax
import numpy as np
import optax

from mtl.core import parallel, train_state, train_step
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS

N_DEV, GLOBAL_BATCH, NUM_STEPS = 8, 32, 2
# The tolerance of tests/core/test_parallel.py: a psum adds the shards' partial
# sums in another order than one device sums the rows.
RTOL, ATOL = 1e-5, 1e-6


def _batches(num_tasks: int):
  rng = np.random.default_rng(0)
  out = []
  for _ in range(NUM_STEPS):
    mask = (rng.random((num_tasks, GLOBAL_BATCH)) > 0.3).astype(np.float32)
    mask[0, :4] = 0.0  # Shard 0 has no rows of task 0.
    out.append(
      {
        'dense': rng.normal(size=(GLOBAL_BATCH, 3)).astype(np.float32),
        'sparse': np.stack(
          [rng.integers(0, 5, GLOBAL_BATCH), rng.integers(0, 7, GLOBAL_BATCH)],
          axis=1,
        ).astype(np.int32),
        'labels': rng.integers(0, 2, (num_tasks, GLOBAL_BATCH)).astype(
          np.float32
        ),
        'mask': mask,
      }
    )
  return out


def assert_devices_equal_one(name: str, kwargs: dict, num_tasks: int = 3):
  """NUM_STEPS steps of `name` on 8 devices (each backend) equal them on
  one device; returns the single-device metrics of the last step."""
  assert jax.device_count() == N_DEV, 'tests/conftest.py emulates 8 devices'
  tasks = tuple(Task(f't{i}') for i in range(num_tasks))
  model = make_model(
    name,
    kwargs,
    num_tasks=num_tasks,
    vocab_sizes=(5, 7),
    embed_dim=2,
    tower_hidden=(4,),
  )
  tx = optax.sgd(0.1, momentum=0.9)
  weighting = WEIGHTINGS['equal']()
  batches = _batches(num_tasks)

  def init():
    return train_state.init_train_state(
      model,
      tx,
      weighting,
      train_step.features_of(batches[0]),
      num_tasks=num_tasks,
      key=jax.random.key(0),
    )

  single = jax.jit(
    train_step.make_train_step(model, tx, weighting, tasks, steps_per_epoch=1)
  )
  want, want_ms = init(), []
  for batch in batches:
    want, m = single(want, batch)
    want_ms.append(jax.block_until_ready(m))
  body = train_step.make_train_step(
    model, tx, weighting, tasks, steps_per_epoch=1, axis_name='data'
  )
  for backend in parallel.BACKENDS:
    run = parallel.make_parallel_train_step(body, backend=backend)
    got = init()
    for batch, want_m in zip(batches, want_ms, strict=True):
      got, got_m = run(got, batch)
      jax.block_until_ready(got_m)  # Emulated devices: wait every step.
      for key in ('loss', 'total_loss'):
        np.testing.assert_allclose(
          got_m[key], want_m[key], rtol=RTOL, atol=ATOL, err_msg=key
        )
    for g, w in zip(
      jax.tree.leaves(got.params), jax.tree.leaves(want.params), strict=True
    ):
      np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=backend)
  return want_ms[-1]
