"""Checkpoints: bitwise round trip, retention, corrupt and foreign ones,
warm start, SIGTERM."""

import logging
import os
import signal

import jax
import numpy as np
import optax
import pytest

from mtl.core import train_state, train_step
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS
from mtl.shell import checkpoint, preemption

TASKS = (Task('a'), Task('b'))


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return {
    'dense': rng.normal(size=(n, 3)).astype(np.float32),
    'sparse': np.stack(
      [rng.integers(0, 5, n), rng.integers(0, 7, n)], axis=1
    ).astype(np.int32),
    'labels': rng.integers(0, 2, (2, n)).astype(np.float32),
    'mask': np.ones((2, n), np.float32),
  }


def _setup(num_experts=2):
  model = make_model(
    'mmoe',
    dict(num_experts=num_experts, expert_hidden=(8,)),
    num_tasks=2,
    vocab_sizes=(5, 7),
    embed_dim=2,
    tower_hidden=(4,),
  )
  tx, weighting = optax.adam(1e-2), WEIGHTINGS['equal']()
  batch = _batch()
  state = train_state.init_train_state(
    model,
    tx,
    weighting,
    train_step.features_of(batch),
    num_tasks=2,
    key=jax.random.key(0),
  )
  step = jax.jit(
    train_step.make_train_step(model, tx, weighting, TASKS, steps_per_epoch=4)
  )
  return state, step, batch


@pytest.fixture(scope='module')
def trained():
  """A state after two real Adam steps, and its step function."""
  state, step, batch = _setup()
  for _ in range(2):
    state, _ = step(state, batch)
  return state, step, batch


def _abstract(state):
  return jax.eval_shape(lambda: state)


def _leaves(state):
  """Every leaf as numpy, typed keys as their key data."""
  return [
    np.asarray(jax.random.key_data(x) if checkpoint._is_key(x) else x)
    for x in jax.tree.leaves(state)
  ]


def _assert_bitwise(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    assert x.dtype == y.dtype and np.array_equal(x, y)


def _listing(root):
  return sorted(str(p.relative_to(root)) for p in root.rglob('*'))


def test_save_restore_is_bitwise(tmp_path, trained):
  state, _, _ = trained
  assert int(state.step) == 2
  moments = state.opt_state[0].mu['embed']['table']
  assert np.abs(np.asarray(moments)).sum() > 0  # Real Adam moments.
  meta = {'epoch': 0, 'batch': 2, 'signature': {'model': 'mmoe'}}
  with checkpoint.Checkpointer(tmp_path, save_every_steps=2) as ckpt:
    assert ckpt.save(state, meta=meta)
    ckpt.wait()
    got, got_meta = ckpt.restore_latest(_abstract(state))
  _assert_bitwise(got, state)
  assert got.rng.dtype == state.rng.dtype
  assert got_meta == meta
  assert isinstance(got, train_state.TrainState)


def test_resumed_state_continues_bitwise(tmp_path, trained):
  """N steps == save + restore + the remaining steps, and donation after an
  async save does not corrupt what is written."""
  state, step, batch = trained
  want = step(step(state, batch)[0], batch)[0]
  ckpt = checkpoint.Checkpointer(tmp_path, save_every_steps=1)
  copy = jax.tree.map(lambda x: x.copy(), state)
  ckpt.save(copy, meta={})
  donated = jax.jit(step, donate_argnums=0)(copy, batch)[0]  # Reuses copy.
  del donated
  ckpt.close()
  ckpt = checkpoint.Checkpointer(tmp_path)
  got, _ = ckpt.restore_latest(_abstract(state))
  ckpt.close()
  _assert_bitwise(got, state)
  _assert_bitwise(step(step(got, batch)[0], batch)[0], want)


def test_only_due_steps_are_saved(tmp_path, trained):
  state, _, _ = trained  # step 2
  with checkpoint.Checkpointer(tmp_path, save_every_steps=3) as ckpt:
    assert not ckpt.save(state, meta={})
    assert ckpt.save(state, meta={}, force=True)
    ckpt.wait()
    assert not ckpt.save(state, meta={}, force=True)  # Already there.
    assert ckpt.all_steps() == [2]


def _save_steps(directory, state, steps, **kw):
  with checkpoint.Checkpointer(directory, save_every_steps=1, **kw) as ckpt:
    for s in steps:
      ckpt.save(state._replace(step=np.int32(s)), meta={'s': s})
    ckpt.wait()
    return ckpt.all_steps()


def test_keeps_the_last_k(tmp_path, trained):
  state, _, _ = trained
  assert _save_steps(tmp_path, state, range(1, 6), max_to_keep=3) == [3, 4, 5]
  assert sorted(p.name for p in tmp_path.iterdir()) == ['3', '4', '5']


def _truncate_a_data_file(step_dir, delete=False):
  """Halves the largest data file of the checkpoint's (merged) OCDBT store.

  (The per-process copies under ocdbt.process_0/ are not read once merged.)
  """
  files = list((step_dir / 'state' / 'd').iterdir())
  target = max(files, key=lambda p: p.stat().st_size)
  if delete:
    target.unlink()
  else:
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])


@pytest.mark.parametrize('delete', [False, True], ids=['truncated', 'deleted'])
def test_corrupt_latest_is_skipped_and_kept(tmp_path, trained, caplog, delete):
  state, _, _ = trained
  _save_steps(tmp_path, state, [4, 5], max_to_keep=2)
  _truncate_a_data_file(tmp_path / '5', delete=delete)
  ckpt = checkpoint.Checkpointer(tmp_path, save_every_steps=1, max_to_keep=2)
  with caplog.at_level(logging.WARNING):
    got, meta = ckpt.restore_latest(_abstract(state))
  assert int(got.step) == 4 and meta == {'s': 4}
  _assert_bitwise(got, state._replace(step=np.int32(4)))
  bad = [
    r.getMessage()
    for r in caplog.records
    if r.getMessage().startswith('skipping corrupt')
  ]
  assert len(bad) == 1 and 'step 5' in bad[0] and str(tmp_path / '5') in bad[0]
  assert (tmp_path / '4').is_dir() and (tmp_path / '5').is_dir()
  # Training on from 4: step 5 is not overwritten, later saves rotate past
  # the corrupt one without deleting it, and a new run still keeps it.
  for s in (5, 6, 7, 8):
    ckpt.save(state._replace(step=np.int32(s)), meta={'s': s})
  ckpt.close()
  assert ckpt.all_steps() == [5, 7, 8]
  assert _save_steps(tmp_path, state, [9, 10], max_to_keep=2) == [5, 9, 10]
  got, meta = checkpoint.Checkpointer(tmp_path).restore_latest(_abstract(state))
  assert int(got.step) == 10 and meta == {'s': 10}


def test_other_model_shape_raises_and_touches_nothing(tmp_path):
  other, _, _ = _setup(num_experts=3)
  _save_steps(tmp_path, other, [1])
  state, _, _ = _setup(num_experts=2)
  before = _listing(tmp_path)
  ckpt = checkpoint.Checkpointer(tmp_path)
  with pytest.raises(ValueError) as err:
    ckpt.restore_latest(_abstract(state))
  ckpt.close()
  msg = str(err.value)
  assert '\n' not in msg
  assert str(tmp_path) in msg and 'step 1' in msg
  assert msg.endswith(
    'params/backbone/experts/mlp/Dense_0/bias has shape (3, 8), expected (2, 8)'
  )
  assert _listing(tmp_path) == before


def test_empty_directory_restores_none(tmp_path):
  state, _, _ = _setup()
  with checkpoint.Checkpointer(tmp_path / 'ckpt') as ckpt:
    assert ckpt.restore_latest(_abstract(state)) is None


def test_restore_params_warm_starts(tmp_path, trained):
  state, _, _ = trained
  _save_steps(tmp_path, state, [3])
  before = _listing(tmp_path)
  fresh, _, _ = _setup()
  params, step = checkpoint.restore_params(tmp_path, _abstract(fresh.params))
  assert step == 3
  _assert_bitwise(params, state.params)
  assert _listing(tmp_path) == before
  other, _, _ = _setup(num_experts=3)
  with pytest.raises(
    ValueError, match=r'experts/mlp/Dense_0/bias has shape \(2, 8\)'
  ):
    checkpoint.restore_params(tmp_path, _abstract(other.params))
  with pytest.raises(FileNotFoundError):
    checkpoint.restore_params(tmp_path / 'none', _abstract(fresh.params))


def test_preemption_guard_turns_sigterm_into_a_flag():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionGuard() as guard:
    assert not guard.should_stop()
    os.kill(os.getpid(), signal.SIGTERM)
    assert guard.requested and guard.should_stop()
  assert signal.getsignal(signal.SIGTERM) is before
  assert preemption.PREEMPTED_EXIT_CODE == 128 + signal.SIGTERM
