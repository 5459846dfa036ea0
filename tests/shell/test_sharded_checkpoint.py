"""Checkpoints of embedding tables split by rows, read onto other layouts.

Oracle: the state before saving, brought to one layout by numpy: a table
split over N devices is the blocks side by side (row i at block i mod N,
row i // N), which `_numpy_blocks` builds from the whole table. Restoring
moves rows only, so every comparison is exact.
"""

import functools
import hashlib

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding

from mtl.core import optim, parallel, sharded_tables, train_state, train_step
from mtl.core.layers.embedding import Column, lookups
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS
from mtl.shell import checkpoint, sharded_restore
from mtl.shell.checkpoint_integrity import checksums

VOCAB = (Column(37, feature='user'), Column(29, feature='item'))
TABLES = ('item', 'user')
ROWS = {'user': 37, 'item': 29}


def _numpy_blocks(table, n):
  r = -(-table.shape[0] // n)
  padded = np.zeros((n * r,) + table.shape[1:], table.dtype)
  padded[: table.shape[0]] = table
  return np.concatenate([padded[k::n] for k in range(n)])


@functools.cache
def _whole_state():
  """A trained-looking state (a step of lazy Adam), tables whole."""
  model = make_model(
    'mmoe',
    dict(num_experts=2, expert_hidden=(4,)),
    num_tasks=2,
    vocab_sizes=VOCAB,
    embed_dim=3,
    tower_hidden=(4,),
  )
  tx = optim.make_optimizer(
    'adam',
    0.05,
    sparse={'tables': TABLES},
    table_shapes=lookups(VOCAB, 3)[1],
  )
  rng = np.random.default_rng(0)
  batch = {
    'dense': rng.normal(size=(8, 3)).astype(np.float32),
    'sparse': np.stack([rng.integers(0, 37, 8), rng.integers(0, 29, 8)], 1),
    'labels': rng.integers(0, 2, (2, 8)).astype(np.float32),
    'mask': np.ones((2, 8), np.float32),
  }
  batch['sparse'] = batch['sparse'].astype(np.int32)
  w = WEIGHTINGS['equal']()
  state = train_state.init_train_state(
    model, tx, w, train_step.features_of(batch), num_tasks=2,
    key=jax.random.key(0),
  )  # fmt: skip
  tasks = (Task('t0'), Task('t1'))
  step = train_step.make_train_step(model, tx, w, tasks, steps_per_epoch=1)
  state, _ = jax.jit(step)(state, batch)
  return state


def _placed(state, n):
  """The state split over the first n devices, as a sharded run holds it."""
  mesh = parallel.make_mesh(jax.devices()[:n])
  split = sharded_tables.shard_state(state, TABLES, n)
  specs = sharded_tables.specs(split, TABLES, parallel.AXIS_NAME)
  return mesh, jax.tree.map(
    lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), split, specs
  )


def _abstract(state):
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
    state,
  )


def _leaves(state):
  return jax.tree_util.tree_flatten_with_path((state.params, state.opt_state))[
    0
  ]


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """A checkpoint of the state split over 8 devices."""
  whole = _whole_state()
  _, state = _placed(whole, 8)
  directory = tmp_path_factory.mktemp('ckpt') / 'checkpoints'
  with checkpoint.Checkpointer(directory, async_save=False) as ckpt:
    meta = {sharded_restore.META_KEY: sharded_restore.meta_of(TABLES, ROWS, 8)}
    assert ckpt.save(state, meta=meta, force=True)
  return directory, whole


@pytest.mark.parametrize('n', [8, 4, 2])
def test_split_checkpoint_restores_onto_n_devices_exactly(saved, n):
  directory, whole = saved
  mesh, want = _placed(whole, n)
  relayout = sharded_restore.Relayout(TABLES, ROWS, mesh)
  with checkpoint.Checkpointer(directory, read_only=True) as ckpt:
    got, meta = ckpt.restore_latest(_abstract(want), relayout)
  assert meta[sharded_restore.META_KEY]['num_devices'] == 8
  for (path, g), (_, w) in zip(_leaves(got), _leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w), str(path))
    assert g.sharding == w.sharding, path  # Split on the reader's devices.
  user = np.asarray(got.params['embed']['user'])
  np.testing.assert_array_equal(
    user, _numpy_blocks(np.asarray(whole.params['embed']['user']), n)
  )


def test_split_checkpoint_restores_whole_on_one_device(saved):
  directory, whole = saved
  abstract = jax.eval_shape(lambda: whole)
  relayout = sharded_restore.Relayout((), ROWS, None)
  with checkpoint.Checkpointer(directory, read_only=True) as ckpt:
    got, _ = ckpt.restore_latest(abstract, relayout)
  for (path, g), (_, w) in zip(_leaves(got), _leaves(whole), strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w), str(path))


def test_whole_checkpoint_restores_split(tmp_path):
  """A checkpoint of whole tables (a replicated run) read into a split one."""
  whole = _whole_state()
  with checkpoint.Checkpointer(tmp_path / 'c', async_save=False) as ckpt:
    assert ckpt.save(whole, meta={}, force=True)
  mesh, want = _placed(whole, 8)
  relayout = sharded_restore.Relayout(TABLES, ROWS, mesh)
  with checkpoint.Checkpointer(tmp_path / 'c', read_only=True) as ckpt:
    got, _ = ckpt.restore_latest(_abstract(want), relayout)
  for (path, g), (_, w) in zip(_leaves(got), _leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w), str(path))


def test_checksum_of_a_split_table_is_the_whole_tables_sha256():
  _, state = _placed(_whole_state(), 8)
  table = state.params['embed']['user']
  assert len(table.sharding.device_set) == 8
  whole = np.ascontiguousarray(np.asarray(table))
  want = f'float32:{hashlib.sha256(whole.tobytes()).hexdigest()}'
  sums = checksums({'t': table})
  assert sums == {'t': want}
  # And a flipped byte in one block changes it.
  blocks = [np.asarray(s.data) for s in table.addressable_shards]
  blocks[3] = blocks[3].copy()
  blocks[3].view(np.uint8)[0] ^= 1
  bad = jax.make_array_from_single_device_arrays(
    table.shape,
    table.sharding,
    [
      jax.device_put(b, s.device)
      for b, s in zip(blocks, table.addressable_shards, strict=True)
    ],
  )
  assert checksums({'t': bad}) != sums
