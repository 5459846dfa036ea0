"""Data-parallel steps against single-device steps on the same global batches.

The oracle is the single-device step (`axis_name=None`, no collectives) run on
the whole global batch: both backends must reproduce its parameters, losses,
weights and eval counts on 8 emulated devices (tests/conftest.py).
"""

import functools
import pathlib
import socket
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import optax
import pytest

from mtl.core import parallel, train_state, train_step
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS
from mtl.data import pipeline
from tests import cli

REPO = pathlib.Path(__file__).resolve().parents[2]

TASKS = (Task('a'), Task('b'))
N_DEV = 8
GLOBAL_BATCH = 64
NUM_STEPS = 3
NUM_BINS = 16
# Non-default hyper-parameters where a method has them, so the weights it
# produces are not all ones; a new method runs with its defaults.
WEIGHTING_KWARGS = {
  'fixed': dict(weights=(2.0, 0.5)),
  'scheduled': dict(weights=(1.0, 2.0), gammas=(0.5, 1.5)),
  'stch': dict(warmup_epochs=0),  # nadir at step 0, STCH at steps 1 and 2
}
# float32, and a psum adds the 8 shards' partial sums in another order than one
# device sums 64 rows: a few ulps of difference per step, compounded over 3
# steps of SGD with momentum. rtol 1e-5 / atol 1e-6 is ~100 ulps of the values
# involved (O(0.1-1)) and far below any real mistake (a wrong count or a
# missing psum changes results at the 1e-2 level).
RTOL, ATOL = 1e-5, 1e-6


def _model():
  return make_model(
    'mmoe',
    dict(num_experts=2, expert_hidden=(8,)),
    num_tasks=2,
    vocab_sizes=(5, 7),
    embed_dim=2,
    tower_hidden=(4,),
  )


def _batch(rng, n=GLOBAL_BATCH):
  mask = (rng.random((2, n)) > 0.3).astype(np.float32)
  mask[0, :8] = 0.0  # Shard 0 has no rows of task a; the others vary.
  mask[1, 8:16] = 1.0
  return {
    'dense': rng.normal(size=(n, 3)).astype(np.float32),
    'sparse': np.stack(
      [rng.integers(0, 5, n), rng.integers(0, 7, n)], axis=1
    ).astype(np.int32),
    'labels': rng.integers(0, 2, (2, n)).astype(np.float32),
    'mask': mask,
  }


@functools.cache
def _batches():
  rng = np.random.default_rng(0)
  out = [_batch(rng) for _ in range(NUM_STEPS)]
  per_shard = out[0]['mask'].reshape(2, N_DEV, -1).sum(-1)
  assert len(set(per_shard[0].tolist())) > 2, 'masks must be uneven'
  return out


@pytest.fixture(scope='module')
def batches():
  return _batches()


def _setup(name):
  model = _model()
  tx = optax.sgd(0.1, momentum=0.9)
  weighting = WEIGHTINGS[name](**WEIGHTING_KWARGS.get(name, {}))
  return model, tx, weighting


def _init(model, tx, weighting, batch):
  return train_state.init_train_state(
    model,
    tx,
    weighting,
    train_step.features_of(batch),
    num_tasks=2,
    key=jax.random.key(0),
  )


@functools.cache
def _single_device_run(name):
  """The oracle: NUM_STEPS single-device steps, final state and metrics.

  Computed once per weighting and shared by both backends (and the
  two-process test): it does not depend on the backend under test.
  """
  model, tx, weighting = _setup(name)
  # steps_per_epoch=1: every step is a new epoch, so schedules move.
  single = jax.jit(
    train_step.make_train_step(model, tx, weighting, TASKS, steps_per_epoch=1)
  )
  state = _init(model, tx, weighting, _batches()[0])
  metrics = []
  for batch in _batches():
    state, m = single(state, batch)
    jax.block_until_ready(m)
    metrics.append(m)
  return state, metrics


def _as_numbers(x):
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(x))
  return np.asarray(x)


def _assert_trees_close(got, want):
  chex.assert_trees_all_equal_structs(got, want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(
      _as_numbers(g), _as_numbers(w), rtol=RTOL, atol=ATOL
    )


# Every method under the default backend (pmap); under shard_map, one method
# of each kind of what `update` needs and keeps (no gradients, losses with
# state, learned params, per-epoch state, gradient norms, the Gram with and
# without state, unit distances, gradient vectors in the state): the
# backends differ only in how the step is mapped over devices, which the
# method's collectives (inside the step, by axis name) do not see.
SHARD_MAP_METHODS = (
  'equal',
  'famo',
  'uncertainty',
  'dwa',
  'gradnorm',
  'mgda',
  'nash_mtl',
  'imtl_g',
  'db_mtl',
  'excess_mtl',
  'modo',
)
CASES = [(name, 'pmap') for name in sorted(WEIGHTINGS)] + [
  (name, 'shard_map') for name in SHARD_MAP_METHODS
]


def test_shard_map_methods_cover_every_kind_of_need():
  kinds = {
    (tuple(sorted(w.needs)), bool(w.combines_gradients))
    for w in (WEIGHTINGS[n]() for n in WEIGHTINGS)
  }
  covered = {
    (tuple(sorted(w.needs)), bool(w.combines_gradients))
    for w in (WEIGHTINGS[n]() for n in SHARD_MAP_METHODS)
  }
  assert covered == kinds


@pytest.mark.parametrize(('name', 'backend'), CASES)
def test_parallel_steps_equal_single_device_steps(name, backend, batches):
  assert jax.device_count() == N_DEV, 'tests/conftest.py emulates 8 devices'
  model, tx, weighting = _setup(name)
  want, want_ms = _single_device_run(name)
  body = train_step.make_train_step(
    model, tx, weighting, TASKS, steps_per_epoch=1, axis_name='data'
  )
  traces = []

  def counted(state, batch):
    traces.append(1)  # Runs only while tracing.
    return body(state, batch)

  run = parallel.make_parallel_train_step(counted, backend=backend)
  got = _init(model, tx, weighting, batches[0])
  for batch, want_m in zip(batches, want_ms, strict=True):
    got, got_m = run(got, batch)
    # Several emulated devices in one process can deadlock with many queued
    # steps (docs/ARCHITECTURE.md §6): wait on every step here.
    jax.block_until_ready(got_m)
    for key in ('loss', 'weight', 'total_loss'):
      np.testing.assert_allclose(
        got_m[key], want_m[key], rtol=RTOL, atol=ATOL, err_msg=key
      )
  assert len(traces) == 1, 'the parallel step retraced across steps'
  for leaf in jax.tree.leaves(got):  # One global array, a copy per device.
    assert leaf.sharding.is_fully_replicated
    assert len(leaf.sharding.device_set) == N_DEV
  # So the next step takes it as it is: no copy, and donation frees it.
  placed = run.put_state(got)
  assert all(
    a is b
    for a, b in zip(jax.tree.leaves(placed), jax.tree.leaves(got), strict=True)
  )
  assert int(got.step) == NUM_STEPS
  _assert_trees_close(got, want)
  if name == 'scheduled':  # The weights really moved with the epoch.
    np.testing.assert_allclose(got_m['weight'], [0.25, 2 * 1.5**2], rtol=1e-6)


@pytest.mark.parametrize('backend', parallel.BACKENDS)
def test_parallel_eval_counts_equal_single_device(backend, batches):
  model, tx, weighting = _setup('equal')
  params = _init(model, tx, weighting, batches[0]).params
  single = jax.jit(train_step.make_eval_step(model, TASKS, num_bins=NUM_BINS))
  run = parallel.make_parallel_eval_step(
    train_step.make_eval_step(
      model, TASKS, num_bins=NUM_BINS, axis_name='data'
    ),
    backend=backend,
  )
  for batch in batches[:2]:
    want, got = single(params, batch), run(params, batch)
    for key in ('count', 'pos', 'neg'):
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    np.testing.assert_array_equal(got['count'], batch['mask'].sum(1))
    np.testing.assert_allclose(
      got['loss_sum'], want['loss_sum'], rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize('backend', parallel.BACKENDS)
def test_parallel_scanned_eval_of_a_split_equals_single_device(backend):
  # The loop's eval: a padded split placed once, scanned in one dispatch.
  eval_batch = 32
  split = _batch(np.random.default_rng(2), n=100)
  padded = pipeline.pad_split(split, eval_batch)
  model, tx, weighting = _setup('equal')
  params = _init(model, tx, weighting, split).params
  want = jax.jit(
    train_step.make_scanned_eval(
      train_step.make_eval_step(model, TASKS, num_bins=NUM_BINS),
      batch_size=eval_batch,
    )
  )(params, padded)
  run = parallel.make_parallel_eval_step(
    train_step.make_scanned_eval(
      train_step.make_eval_step(
        model, TASKS, num_bins=NUM_BINS, axis_name='data'
      ),
      batch_size=eval_batch // N_DEV,
    ),
    backend=backend,
  )
  placed = run.put_batch(padded)
  for _ in range(2):  # The placed split is reused, not donated.
    got = run.on_placed(params, placed)
    for key in ('count', 'pos', 'neg'):
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    np.testing.assert_array_equal(got['count'], split['mask'].sum(1))
    np.testing.assert_allclose(
      got['loss_sum'], want['loss_sum'], rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize('backend', parallel.BACKENDS)
def test_batch_not_divisible_by_devices_is_a_one_line_error(backend):
  run = parallel.make_parallel_eval_step(lambda p, b: b, backend=backend)
  batch = _batch(np.random.default_rng(1), n=60)
  with pytest.raises(ValueError) as err:
    run({}, batch)
  assert str(err.value) == (
    'batch_size 60 is not divisible by the 8 devices; use a multiple of 8'
  )


def test_check_divisible_names_the_key():
  parallel.check_divisible(64, 8)
  with pytest.raises(ValueError, match=r'^eval_batch_size 1000 is not'):
    parallel.check_divisible(1000, 3, 'eval_batch_size')


def test_unknown_backend_is_a_one_line_error():
  with pytest.raises(ValueError) as err:
    parallel.make_parallel_train_step(lambda s, b: (s, {}), backend='shardmap')
  msg = str(err.value)
  assert '\n' not in msg
  assert msg == (
    "unknown parallel backend 'shardmap': expected one of pmap, shard_map "
    "(did you mean 'shard_map'?)"
  )


def test_shard_batch_round_trips_and_splits_the_batch_axis(batches):
  batch = batches[0]
  sharded = parallel.shard_batch(batch, N_DEV)
  assert sharded['dense'].shape == (N_DEV, 8, 3)
  assert sharded['labels'].shape == (N_DEV, 2, 8)
  np.testing.assert_array_equal(sharded['mask'][1], batch['mask'][:, 8:16])
  np.testing.assert_array_equal(sharded['sparse'][2], batch['sparse'][16:24])
  back = parallel.unshard_batch(sharded)
  for k in batch:
    np.testing.assert_array_equal(back[k], batch[k])


def test_replicate_gives_pmap_one_copy_per_device():
  devices = jax.devices()
  tree = {'w': np.arange(6.0, dtype=np.float32).reshape(2, 3)}
  rep = parallel.replicate(tree, devices)
  assert rep['w'].shape == (N_DEV, 2, 3)
  assert {s.device for s in rep['w'].addressable_shards} == set(devices)
  out = jax.pmap(lambda t: t['w'] * 2)(rep)
  np.testing.assert_array_equal(parallel.unreplicate(out), tree['w'] * 2)
  np.testing.assert_array_equal(parallel.unreplicate(rep)['w'], tree['w'])


# Two processes of 4 CPU devices each, joined by jax.distributed on localhost
# each passes only its local half of every global batch.
WORKER = textwrap.dedent(
  """
  import sys
  import jax
  jax.config.update('jax_num_cpu_devices', 4)
  pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
  jax.distributed.initialize(f'127.0.0.1:{port}', 2, pid)
  import numpy as np
  import test_parallel as t
  assert jax.device_count() == 8 and jax.local_device_count() == 4
  model, tx, weighting = t._setup('fixed')
  rng = np.random.default_rng(0)
  batches = [t._batch(rng) for _ in range(t.NUM_STEPS)]
  body = t.train_step.make_train_step(
    model, tx, weighting, t.TASKS, steps_per_epoch=1, axis_name='data'
  )
  half = t.GLOBAL_BATCH // 2
  rows = slice(pid * half, (pid + 1) * half)
  result = {}
  for backend in t.parallel.BACKENDS:
    run = t.parallel.make_parallel_train_step(body, backend=backend)
    state = t._init(model, tx, weighting, batches[0])
    for b in batches:
      local = {k: v[:, rows] if k in ('labels', 'mask') else v[rows]
               for k, v in b.items()}
      state, m = run(state, local)
      jax.block_until_ready(m)  # Every step across processes.
    local0 = lambda x: np.asarray(x.addressable_data(0))
    for i, leaf in enumerate(jax.tree.leaves(state.params)):
      result[f'{backend}/{i}'] = local0(leaf)
    result[f'{backend}/loss'] = local0(m['loss'])
  np.savez(out, **result)
  """
)


def _free_port():
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def test_two_processes_with_local_batches_equal_one_device(tmp_path):
  script = tmp_path / 'worker.py'
  script.write_text(WORKER)
  env = cli.one_device_env()
  env.update(
    JAX_PLATFORMS='cpu',
    PYTHONPATH=f'{REPO}:{REPO / "tests" / "core"}',
  )
  port = _free_port()
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        str(script),
        str(pid),
        str(port),
        str(tmp_path / f'{pid}.npz'),
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for pid in range(2)
  ]
  logs = []
  try:
    for proc in procs:
      # jax.distributed catches SIGTERM: a hung worker needs a hard kill.
      logs.append(proc.communicate(timeout=150)[0])
  finally:
    for proc in procs:
      proc.kill()
  for proc, log in zip(procs, logs, strict=True):
    assert proc.returncode == 0, log[-3000:]
  want, want_ms = _single_device_run('fixed')
  want_m = want_ms[-1]
  want_leaves = jax.tree.leaves(want.params)
  for pid in range(2):
    got = np.load(tmp_path / f'{pid}.npz')
    for backend in parallel.BACKENDS:
      for i, leaf in enumerate(want_leaves):
        np.testing.assert_allclose(
          got[f'{backend}/{i}'], leaf, rtol=RTOL, atol=ATOL
        )
      np.testing.assert_allclose(
        got[f'{backend}/loss'], want_m['loss'], rtol=RTOL, atol=ATOL
      )
