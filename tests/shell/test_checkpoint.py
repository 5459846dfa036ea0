"""Checkpoints: bitwise round trip, retention, corrupt and foreign ones,
checksums, stale temporary directories, warm start, SIGTERM and SIGINT."""

import collections
import logging
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from mtl.core import train_state, train_step
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS
from mtl.errors import ConfigError
from mtl.shell import checkpoint, preemption
from mtl.shell.checkpoint_retention import CORRUPT_STEPS_FILE
from mtl.shell.typed_keys import is_key

REPO = pathlib.Path(__file__).resolve().parents[2]

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
    np.asarray(jax.random.key_data(x) if is_key(x) else x)
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


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_preemption_guard_turns_sigterm_and_sigint_into_a_flag(signum):
  before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
  with preemption.PreemptionGuard() as guard:
    assert not guard.should_stop()
    os.kill(os.getpid(), signum)
    assert guard.requested and guard.should_stop()
    assert guard.signum == signum
    other = ({*preemption.SIGNALS} - {signum}).pop()
    os.kill(os.getpid(), other)  # Ignored: already stopping.
    assert guard.signum == signum
  assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before
  assert preemption.PREEMPTED_EXIT_CODE == 128 + signal.SIGTERM == 143
  assert preemption.INTERRUPTED_EXIT_CODE == 128 + signal.SIGINT == 130
  e = preemption.Preempted(7, signum)
  assert e.exit_code == 128 + signum and e.step == 7
  assert str(e).startswith(
    'interrupted at step 7: checkpoint saved'
    if signum == signal.SIGINT
    else 'preempted at step 7: checkpoint saved'
  )


def test_max_to_keep_below_one_is_rejected(tmp_path):
  for bad in (0, -1):
    with pytest.raises(ConfigError) as err:
      checkpoint.Checkpointer(tmp_path / 'ckpt', max_to_keep=bad)
    msg = str(err.value)
    assert '\n' not in msg
    assert msg.startswith(f'checkpoint.max_to_keep is {bad}, expected >= 1')
  assert not (tmp_path / 'ckpt').exists()
  checkpoint.Checkpointer(tmp_path / 'ckpt', max_to_keep=None).close()


Small = collections.namedtuple('Small', 'step params')


def _random_state(step, seed=0):
  """Incompressible values: orbax stores them raw, so a flipped byte decodes
  to another number instead of failing to decompress."""
  rng = np.random.default_rng(seed)
  return Small(
    np.int32(step),
    {
      'w': jax.numpy.asarray(rng.normal(size=(64, 64)).astype(np.float32)),
      'b': jax.numpy.asarray(rng.normal(size=(8,)).astype(np.float32)),
    },
  )


def _flip_a_byte(step_dir):
  """Inverts the middle byte of the largest array data file."""
  files = [p for p in (step_dir / 'state').rglob('*') if p.is_file()]
  target = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  data[len(data) // 2] ^= 0xFF
  target.write_bytes(bytes(data))


def test_flipped_bytes_in_newest_are_skipped_by_checksum(tmp_path, caplog):
  with checkpoint.Checkpointer(tmp_path, save_every_steps=1) as ckpt:
    ckpt.save(_random_state(4, seed=4), meta={'s': 4})
    ckpt.save(_random_state(5, seed=5), meta={'s': 5})
  _flip_a_byte(tmp_path / '5')
  abstract = jax.eval_shape(lambda: _random_state(0))
  ckpt = checkpoint.Checkpointer(tmp_path)
  with caplog.at_level(logging.WARNING):
    got, meta = ckpt.restore_latest(abstract)
  ckpt.close()
  assert int(got.step) == 4 and meta == {'s': 4}  # No checksums in meta.
  _assert_bitwise(got, _random_state(4, seed=4))
  bad = [
    r.getMessage()
    for r in caplog.records
    if r.getMessage().startswith('skipping corrupt')
  ]
  assert len(bad) == 1 and 'step 5' in bad[0] and 'sha256 mismatch' in bad[0]
  assert (tmp_path / '4').is_dir() and (tmp_path / '5').is_dir()
  assert '5' in (tmp_path / CORRUPT_STEPS_FILE).read_text()


def test_checkpoint_without_checksums_restores(tmp_path):
  """A checkpoint of an earlier mtl restores: written by orbax's own
  StandardCheckpointHandler (zstd-compressed arrays), meta without
  checksums."""
  ocp = checkpoint.ocp
  state = _random_state(3)
  manager = ocp.CheckpointManager(
    tmp_path,
    item_handlers={
      'state': ocp.StandardCheckpointHandler(),
      'meta': ocp.JsonCheckpointHandler(),
    },
  )
  manager.save(
    3,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({'s': 3})
    ),
  )
  manager.close()
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    got, meta = ckpt.restore_latest(jax.eval_shape(lambda: state))
  assert meta == {'s': 3}
  _assert_bitwise(got, state)


def test_checksums_are_taken_before_the_state_is_donated(tmp_path):
  state = _random_state(2)
  copy = jax.tree.map(lambda x: x.copy(), state)
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(copy, meta={}, force=True)
    jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)(copy)
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    got, _ = ckpt.restore_latest(jax.eval_shape(lambda: state))
  _assert_bitwise(got, state)


def test_stale_tmp_directories_are_removed_only_when_asked(tmp_path, caplog):
  with checkpoint.Checkpointer(tmp_path, save_every_steps=1) as ckpt:
    ckpt.save(_random_state(4), meta={})
  stale = tmp_path / '6.orbax-checkpoint-tmp-1234567'
  (stale / 'state').mkdir(parents=True)
  (stale / 'state' / 'half').write_bytes(b'x' * 10)
  checkpoint.Checkpointer(tmp_path).close()
  assert stale.is_dir()  # Not the caller's to remove: kept.
  with caplog.at_level(logging.WARNING):
    ckpt = checkpoint.Checkpointer(tmp_path, remove_stale_tmp=True)
  assert not stale.exists()
  assert any(str(stale) in r.getMessage() for r in caplog.records)
  assert ckpt.all_steps() == [4]
  ckpt.save(_random_state(6), meta={}, force=True)
  ckpt.close()
  assert sorted(p.name for p in tmp_path.iterdir()) == ['4', '6']


STOP = """
import sys, time
import numpy as np
from mtl.shell import checkpoint, preemption
sys.path.insert(0, sys.argv[2])
from test_checkpoint import _random_state

def main():
  ckpt = checkpoint.Checkpointer(sys.argv[1], save_every_steps=10**6)
  with preemption.PreemptionGuard() as guard:
    step = 0
    while True:
      step += 1
      time.sleep(0.01)
      if step == 3:
        print('ready', flush=True)
      if guard.should_stop():
        print('saving', flush=True)
        time.sleep(1.0)  # A second Ctrl-C arrives now.
        ckpt.save(_random_state(step), meta={'s': step}, force=True)
        ckpt.close()
        raise preemption.Preempted(step, guard.signum)

try:
  main()
except preemption.Preempted as e:
  print(f'mtl-train: {e}', file=sys.stderr)
  sys.exit(e.exit_code)
"""


def test_ctrl_c_saves_and_a_second_one_is_ignored(tmp_path):
  proc = subprocess.Popen(
    [sys.executable, '-c', STOP, str(tmp_path), str(REPO / 'tests' / 'shell')],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    cwd=REPO,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )
  assert proc.stdout.readline().strip() == 'ready'
  proc.send_signal(signal.SIGINT)
  assert proc.stdout.readline().strip() == 'saving'
  proc.send_signal(signal.SIGINT)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == preemption.INTERRUPTED_EXIT_CODE, stderr
  assert 'SIGINT ignored: already stopping' in stderr
  line = [x for x in stderr.splitlines() if x.startswith('mtl-train: ')]
  assert line and line[0].startswith('mtl-train: interrupted at step ')
  step = int(line[0].split('at step ')[1].split(':')[0])
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    assert ckpt.all_steps() == [step]
    got, meta = ckpt.restore_latest(jax.eval_shape(lambda: _random_state(0)))
  assert meta == {'s': step}
  _assert_bitwise(got, _random_state(step))
