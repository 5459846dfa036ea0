"""The training inputs of the in-memory modes (mtl/shell/inputs.py), and
that only the input object tells the modes apart.

Oracle: numpy indexing of the split by the epoch's permutation (the rows of
batch b are perm[b * B : (b + 1) * B]), numpy padding of the evaluation
splits, and the shell's source read with `ast`. The streamed input is
tested against these same batches in tests/data/test_streaming.py.
"""

import ast
import pathlib
import types

import jax
import numpy as np
import pytest

from mtl.core import train_step
from mtl.core.tasks import Task
from mtl.data.dataset import Dataset
from mtl.shell import inputs
from tests import syntax_trees

SHELL = pathlib.Path(__file__).resolve().parents[2] / 'mtl' / 'shell'
N, B, K, EVAL_B = 50, 8, 3, 16
MODES = ('device', 'host', 'stream')


def _dataset() -> Dataset:
  r = np.random.default_rng(0)

  def split(n):
    return {
      'dense': r.normal(size=(n, 2)).astype(np.float32),
      'sparse': r.integers(0, 5, (n, 1)).astype(np.int32),
      'labels': (np.arange(n)[None] % 2).astype(np.float32),
      'mask': np.ones((1, n), np.float32),
    }

  return Dataset(
    name='tiny',
    tasks=(Task('y'),),
    dense_names=('a', 'b'),
    sparse_names=('c',),
    vocab_sizes=(5,),
    splits={'train': split(N), 'validation': split(21), 'test': split(7)},
  )


def _settings(mode: str):
  return types.SimpleNamespace(
    input_mode=mode,
    batch_size=B,
    eval_batch_size=EVAL_B,
    steps_per_dispatch=K,
  )


def _want(split, perm, b: int) -> dict:
  rows = np.asarray(perm)[b * B : (b + 1) * B]
  return {
    'dense': split['dense'][rows],
    'sparse': split['sparse'][rows],
    'labels': split['labels'][:, rows],
    'mask': split['mask'][:, rows],
  }


def _equal(got, want):
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(np.asarray(got[k]), want[k])


def test_make_input_chooses_one_input_a_mode():
  ds = _dataset()
  assert isinstance(
    inputs.make_input(_settings('device'), ds), inputs.DeviceInput
  )
  assert isinstance(inputs.make_input(_settings('host'), ds), inputs.HostInput)
  with pytest.raises(KeyError):
    inputs.make_input(_settings('gpu'), ds)


def test_host_batches_are_the_permutations_rows_one_a_dispatch():
  ds = _dataset()
  data = inputs.make_input(_settings('host'), ds)
  assert (data.scans, data.dispatch_steps, data.num_rows) == (False, 1, N)
  key = jax.random.key(4)
  for epoch in (0, 1):
    perm = data.permutation(key, epoch)
    assert isinstance(perm, np.ndarray)
    assert sorted(perm.tolist()) == list(range(N))
    for b in range(N // B):
      _equal(data.batch(perm, b), _want(ds.splits['train'], perm, b))
    _equal(data.sample(perm, B), _want(ds.splits['train'], perm, 0))
  assert data.data_state(1, 2) is None


def test_device_dispatches_scan_k_batches_of_the_same_order():
  ds = _dataset()
  device = inputs.make_input(_settings('device'), ds)
  host = inputs.make_input(_settings('host'), ds)
  assert (device.scans, device.dispatch_steps) == (True, K)
  key = jax.random.key(4)
  perm = device.permutation(key, 1)
  np.testing.assert_array_equal(np.asarray(perm), host.permutation(key, 1))
  data, order, start = device.scan_data(perm, 2, K)
  for i in range(K):  # What make_scanned_steps gathers at step i.
    idx = np.asarray(order)[(start + i) * B :][:B]
    got = train_step.gather_rows(data, idx)
    _equal(got, _want(ds.splits['train'], perm, 2 + i))


def test_a_populations_orders_are_each_members_order_stacked():
  ds = _dataset()
  keys = [jax.random.key(s) for s in (0, 1, 2)]
  for mode in ('device', 'host'):
    data = inputs.make_input(_settings(mode), ds)
    got = np.asarray(data.permutations(keys, 3))
    assert got.shape == (3, N)
    for j, k in enumerate(keys):
      np.testing.assert_array_equal(got[j], np.asarray(data.permutation(k, 3)))


def test_in_memory_evaluation_is_one_padded_part_placed_once():
  ds = _dataset()
  puts = []
  data = inputs.make_input(
    _settings('host'), ds, put=lambda x: puts.append(x) or x
  )
  assert len(puts) == 2  # Validation and test, when the input is made.
  (part,) = data.eval_parts('validation')
  assert part is puts[0]
  val = ds.splits['validation']
  pad = 32 - 21  # Up to a multiple of the eval batch; padding masked.
  np.testing.assert_array_equal(
    part['dense'], np.pad(val['dense'], ((0, pad), (0, 0)))
  )
  np.testing.assert_array_equal(
    part['mask'], np.pad(val['mask'], ((0, 0), (0, pad)))
  )
  (again,) = data.eval_parts('validation')
  assert again is part and len(puts) == 2


def _mode_reads(path: pathlib.Path) -> list[str]:
  """Where a module reads `input_mode` or compares a value to a mode."""
  found = []
  for node in ast.walk(syntax_trees.parse(path.read_text())):
    if isinstance(node, ast.Attribute) and node.attr == 'input_mode':
      found.append(f'{path.name}:{node.lineno}: .input_mode')
    if isinstance(node, ast.Compare):
      for c in [node.left, *node.comparators]:
        if isinstance(c, ast.Constant) and c.value in MODES:
          found.append(f'{path.name}:{node.lineno}: == {c.value!r}')
  return found


def test_only_the_input_tells_the_modes_apart():
  # The engines and the loop call the input; the config's side (settings,
  # build's checks, a streamed run reopened in memory) reads the config.
  engines_and_loop = (
    'engines.py',
    'population_engine.py',
    'epochs.py',
    'epoch_loop.py',
    'run_setup.py',
    'trainer.py',
  )
  found = [f for name in engines_and_loop for f in _mode_reads(SHELL / name)]
  assert not found, found
  assert _mode_reads(SHELL / 'inputs.py')  # The one place that does.
