"""input_mode='stream' (mtl/data/streaming.py) against the in-memory modes.

A small generated scale table (mtl/data/scale.py) is prepared once. The
streamed batches are the in-memory batches of the same permutation; a
stream run equals a device run bit for bit; two streaming processes equal
one; a run killed mid-epoch resumes from its checkpointed iterator state
and ends bitwise like an uninterrupted run; a dataset with nothing to
stream is one ConfigError line.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mtl.data import pipeline, row_files, streaming
from mtl.data.scale import write_scale_table
from mtl.errors import CheckpointError, ConfigError, DataError
from mtl.shell import checkpoint
from tests import cli, compile_log, forked

REPO = pathlib.Path(__file__).resolve().parents[2]
ROWS, BATCH = 2000, 128
SPE = ROWS // BATCH  # 15 steps an epoch
TOTAL = SPE  # One epoch.


@pytest.fixture(scope='module')
def table(tmp_path_factory, tfds_dir):
  """(MTL_SCALE_DIR, the scale config's dataset keywords), prepared."""
  sys.path.insert(0, str(REPO))
  from configs import scale

  root = tmp_path_factory.mktemp('scale')
  write_scale_table(
    scale.scale_dir(ROWS, root), rows=ROWS, num_users=200, num_items=300
  )
  os.environ['MTL_SCALE_DIR'] = str(root)  # Expanded in dataset.path.
  kwargs = scale.get_config(str(ROWS)).dataset.to_dict()
  kwargs['data_dir'] = str(tfds_dir)
  streaming.load_streaming(kwargs)  # Prepares it and writes the row file.
  return root, kwargs


def test_stream_order_is_the_in_memory_order(table):
  from mtl.data import DATASETS

  _, kwargs = table
  memory = DATASETS['table'](**kwargs).splits['train']
  rows = streaming.row_file(streaming.load_streaming(kwargs, write=False))
  assert rows.num_rows == ROWS
  key = jax.random.key(3)
  for epoch in (0, 1):
    perm = np.asarray(pipeline.epoch_permutation(key, epoch, ROWS))
    want = list(pipeline.host_batches(memory, perm, BATCH))
    got = list(streaming.epoch_iterator(rows, perm, BATCH))
    assert len(got) == len(want) == SPE
    for a, b in zip(got, want, strict=True):
      jax.tree.map(np.testing.assert_array_equal, a, b)
  it = streaming.epoch_iterator(rows, perm, BATCH, state={'next_index': 9})
  jax.tree.map(np.testing.assert_array_equal, next(it), want[9])
  assert it.get_state() == {'next_index': 10}


# A small model and checkpoints every 4 steps (mid-epoch).
OVERRIDES = {
  'batch_size': BATCH,
  'num_epochs': 1,
  'model.num_experts': 2,
  'model.expert_hidden': (16,),
  'embedding.dim': 4,
  'towers.hidden': (8,),
  'eval_batch_size': 64,
  'steps_per_dispatch': 4,
  'checkpoint.every_steps': 4,
  'progress_bar': False,
}


def test_a_streamed_dataset_carries_its_row_files_typed(table):
  from mtl.data import DATASETS

  _, kwargs = table
  memory = DATASETS['table'](**kwargs)
  ds = streaming.load_streaming(kwargs, write=False)
  assert isinstance(ds, streaming.StreamedDataset)
  assert 'stream' not in ds.stats  # Statistics only.
  files = streaming.stream_files(ds)
  assert files is ds.files
  for split in ('train', 'validation', 'test'):
    rows = memory.num_rows(split)
    assert files.rows[split] == rows == streaming.row_file(ds, split).num_rows
  assert streaming.train_rows(ds) == ROWS
  # A dataset in memory has none; a replaced copy keeps them.
  assert streaming.stream_files(memory) is None
  assert streaming.train_rows(memory) == ROWS
  copy = dataclasses.replace(ds, name='renamed')
  assert streaming.stream_files(copy) is files


def test_the_stream_input_reads_the_in_memory_batches(table):
  from mtl.data import DATASETS
  from mtl.shell import inputs

  _, kwargs = table
  memory = DATASETS['table'](**kwargs).splits['train']
  settings = types.SimpleNamespace(
    input_mode='stream', batch_size=BATCH, eval_batch_size=BATCH,
    steps_per_dispatch=4,
  )  # fmt: skip
  data = inputs.make_input(
    settings, streaming.load_streaming(kwargs, write=False)
  )
  assert (data.scans, data.dispatch_steps, data.num_rows) == (True, 4, ROWS)
  perm = data.permutation(jax.random.key(3), 1)
  want = list(pipeline.host_batches(memory, perm, BATCH))
  scanned, order, start = data.scan_data(perm, 0, 4)
  np.testing.assert_array_equal(order, np.arange(4 * BATCH))
  assert start == 0
  for i in range(4):
    rows = np.arange(i * BATCH, (i + 1) * BATCH)
    jax.tree.map(
      np.testing.assert_array_equal,
      pipeline.take_rows(scanned, rows),
      want[i],
    )
  jax.tree.map(np.testing.assert_array_equal, data.batch(perm, 4), want[4])
  assert data.data_state(1, 5) == {
    'epoch': 1,
    'iterator': {'next_index': 5},
  }
  # Resumed at batch 5 of epoch 1, as a checkpoint's meta says.
  again = inputs.make_input(
    settings, streaming.load_streaming(kwargs, write=False)
  )
  again.restore_data_state(data.data_state(1, 5))
  perm = again.permutation(jax.random.key(3), 1)
  jax.tree.map(np.testing.assert_array_equal, again.batch(perm, 5), want[5])
  with pytest.raises(CheckpointError, match='expected next_index 3'):
    again.restore_data_state({'epoch': 1, 'iterator': {'next_index': 9}})
    again.permutation(jax.random.key(3), 1)
    again.batch(perm, 3)


def _config(tfds_dir, mode: str):
  from configs import scale

  config = scale.get_config(str(ROWS))
  for key, value in OVERRIDES.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  config.dataset.data_dir = str(tfds_dir)
  config.input_mode = mode
  return config


def _flags(tfds_dir, workdir, *extra):
  def text(v):
    return str(v).lower() if isinstance(v, bool) else str(v).replace(' ', '')

  return [
    f'--config=configs/scale.py:{ROWS}',
    f'--workdir={workdir}',
    f'--config.dataset.data_dir={tfds_dir}',
    *(f'--config.{k}={text(v)}' for k, v in OVERRIDES.items()),
    *extra,
  ]


def _env(root):
  env = cli.one_device_env()
  bin_dir = str(pathlib.Path(sys.executable).parent)
  env.update(
    MTL_SCALE_DIR=str(root),
    JAX_PLATFORMS='cpu',
    PATH=f'{bin_dir}:{env.get("PATH", "")}',
  )
  return env


def _train(root, tfds_dir, workdir, *extra, timeout=300):
  proc = cli.run(
    _flags(tfds_dir, workdir, *extra), env=_env(root), timeout=timeout
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads((workdir / 'results.json').read_text())


def _final(workdir):
  """The last checkpoint's state, read onto one device (whatever the
  devices and processes that saved it)."""
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', read_only=True)
  step = ckpt.all_steps()[-1]
  assert step == TOTAL, ckpt.all_steps()
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
    ckpt.saved_tree(step),
  )
  state = ckpt.read_tree(step, target)
  ckpt.close()
  return state


def _assert_same(workdir, reference):
  jax.tree.map(
    np.testing.assert_array_equal, _final(workdir), _final(reference)
  )
  got, want = (
    json.loads((w / 'results.json').read_text()) for w in (workdir, reference)
  )
  assert got['test'] == want['test']
  assert got['validation'] == want['validation']


STREAM = ('--config.input_mode=stream',)
# One process of two devices, the data-parallel step, from the command line:
# the killed run (its reference is the same, trained in-process).
TWO_DEVICES = (
  *STREAM,
  '--num_cpu_devices=2',
  '--config.parallel.num_devices=0',
)


def _run_config(tfds_dir, mode: str, devices: int):
  """The config of an in-process run on `devices` devices, evaluation in
  batches of 64 (the validation split is 4 batches of 64 rows, the last
  padded; OVERRIDES' eval batch, so the command-line runs match)."""
  config = _config(tfds_dir, mode)
  assert config.eval_batch_size == 64
  if devices > 1:
    config.parallel.num_devices = devices
    config.steps_per_dispatch = 1
  return config


@pytest.fixture(scope='module')
def reference(table, tfds_dir, tmp_path_factory):
  """One process of two devices, the data-parallel step, streamed, its
  evaluation a batch per chunk: the stream run that
  test_a_stream_run_equals_an_in_memory_run[2] compares with host mode and
  the reference of the two-process run and of the killed run. Trained once,
  in this process, on its first two devices."""
  from mtl.shell import trainer

  workdir = tmp_path_factory.mktemp('reference')
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(streaming, 'EVAL_CHUNK_ROWS', 1)
    trainer.train(_run_config(tfds_dir, 'stream', 2), workdir)
  return workdir


def test_eval_chunks_give_each_device_its_in_memory_rows(table):
  """Streamed evaluation reads, for every device of a process, the rows
  the in-memory evaluation gives it: the d-th contiguous part of the split
  padded to the eval batch (process_rows, then put_batch's split)."""
  from mtl.data import DATASETS

  _, kwargs = table
  memory = DATASETS['table'](**kwargs).splits['validation']
  rows = streaming.row_file(
    streaming.load_streaming(kwargs, write=False), 'validation'
  )
  batch, devices = 96, 4
  padded = pipeline.pad_split(memory, batch)
  n = padded['labels'].shape[1]
  assert n > memory['labels'].shape[1]  # The last batch is padded.
  for local in ([0, 1, 2, 3], [2, 3], [1]):  # 1 process of 4, 2 of 2, 4 of 1.
    chunks = list(
      streaming.eval_chunks(
        rows, batch, devices=devices, local=local, chunk_batches=2
      )
    )
    assert len(chunks) > 1
    for j, d in enumerate(local):
      parts = [
        pipeline.take_rows(
          c, np.array_split(np.arange(c['labels'].shape[1]), len(local))[j]
        )
        for c in chunks
      ]
      got = {
        k: np.concatenate(
          [p[k] for p in parts], 1 if k in ('labels', 'mask') else 0
        )
        for k in parts[0]
      }
      want = pipeline.take_rows(
        padded, np.arange(d * n // devices, (d + 1) * n // devices)
      )
      jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize('devices', [1, 2])
def test_a_stream_run_equals_an_in_memory_run(
  table, tfds_dir, reference, tmp_path, monkeypatch, devices
):
  """Training and evaluation streamed from disk, evaluation a batch per
  chunk (the validation split is 4 batches of 64 rows, the last padded),
  equal the in-memory run bit for bit: on one device against device mode,
  data-parallel on two against host mode (that stream run is `reference`,
  trained once for this test and the multi-process ones)."""
  from mtl.shell import trainer

  monkeypatch.setattr(streaming, 'EVAL_CHUNK_ROWS', 1)
  memory = 'device' if devices == 1 else 'host'
  # In this process: no start-up cost.
  trainer.train(_run_config(tfds_dir, memory, devices), tmp_path / memory)
  stream = reference
  if devices == 1:
    stream = tmp_path / 'stream'
    trainer.train(_run_config(tfds_dir, 'stream', devices), stream)
  _assert_same(stream, tmp_path / memory)
  _, kwargs = table
  ds = streaming.load_streaming(kwargs, write=False)
  for split in ('validation', 'test'):  # Several chunks each.
    rows = streaming.row_file(ds, split)
    assert len(list(streaming.eval_chunks(rows, 64, devices=devices))) >= 3


def test_stream_mode_compiles_nothing_after_the_first_epoch(
  table, tfds_dir, tmp_path, capsys
):
  """input_mode='stream' (batches read from the row files by a background
  thread, a jitted step per dispatch): after epoch 1 compiled the step for
  each dispatch length (15 steps in dispatches of 4: 4 and 3) and the
  evaluation, epoch 2 compiles at most the best params' copy and epoch 3
  nothing. jax's compile log, as for the device and host modes
  (tests/shell/test_profiling.py)."""
  config = _run_config(tfds_dir, 'stream', 1)
  config.num_epochs = 3
  config.checkpoint.async_save = False
  epochs, _ = compile_log.compiles_per_epoch(config, tmp_path / 'run', capsys)
  compile_log.assert_compiled_in_the_first_epoch_only(epochs)


@pytest.mark.slow
def test_two_streaming_processes_equal_one(
  table, tfds_dir, reference, tmp_path
):
  root, _ = table
  workdir = tmp_path / 'two'
  cmd = ['launch/multiprocess_cpu.sh', '2', '1', f'configs/scale.py:{ROWS}']
  cmd += [str(workdir)] + _flags(tfds_dir, workdir, *STREAM)[2:]
  proc = subprocess.Popen(
    cmd,
    cwd=REPO,
    env=_env(root),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    start_new_session=True,
  )
  try:
    out = proc.communicate(timeout=300)[0]
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, 9)  # jax.distributed catches SIGTERM.
    raise
  logs = [(workdir / f'process_{i}.log').read_text() for i in range(2)]
  assert proc.returncode == 0, out[-2000:] + logs[0][-2000:] + logs[1][-2000:]
  assert (
    json.loads((workdir / 'results.json').read_text())['num_processes'] == 2
  )
  _assert_same(workdir, reference)


def _committed_steps(workdir):
  """Steps whose checkpoint directory is committed (renamed to its step).

  Orbax writes `commit_success.txt` inside `<step>.orbax-checkpoint-tmp-*`
  before renaming it, so the marker alone does not mean committed.
  """
  return [
    int(p.parent.name)
    for p in (workdir / 'checkpoints').glob('*/commit_success.txt')
    if p.parent.name.isdigit()
  ]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_is_bitwise_identical(
  table, tfds_dir, reference, tmp_path
):
  root, _ = table
  # A process of its own, forked from tests/cli.py's server (tests/forked.py),
  # held at its stop check of step 4 (one step a dispatch on two devices),
  # whose checkpoint is committed meanwhile.
  proc = forked.start(
    _flags(tfds_dir, tmp_path, *TWO_DEVICES), _env(root), hold_at=4
  )
  try:
    deadline = time.time() + 240
    while not _committed_steps(tmp_path):
      assert proc.poll() is None, proc.stderr()[-3000:]
      assert time.time() < deadline, 'no checkpoint in time'
      time.sleep(0.02)
    proc.kill()  # SIGKILL at the first checkpoint, step 4: mid-epoch 0.
    proc.wait(timeout=30)
  finally:
    proc.close()
  # The newest committed checkpoint is what the rerun resumes from; its
  # meta holds the stream's position (read now: retention drops it later).
  step = max(_committed_steps(tmp_path))
  meta = ocp.JsonCheckpointHandler().restore(
    tmp_path / 'checkpoints' / str(step) / 'meta'
  )
  assert step == 4, step
  assert meta['data'] == {
    'epoch': step // SPE,
    'iterator': {'next_index': step % SPE},
  }
  result = _train(root, tfds_dir, tmp_path, *TWO_DEVICES)
  assert result['resumed_from_step'] == step
  _assert_same(tmp_path, reference)


def test_stream_without_array_record_files_is_one_config_error():
  sys.path.insert(0, str(REPO))
  from configs import common
  from mtl.shell import build

  config = common.base_config('mmoe', 'synthetic')
  config.input_mode = 'stream'
  with pytest.raises(ConfigError) as e:
    build.check_names(config)
  message = str(e.value)
  assert '\n' not in message
  assert "input_mode is 'stream' with dataset 'synthetic'" in message
  assert 'array_record' in message


def test_row_file_of_the_wrong_size_is_one_data_error(table, tmp_path):
  """A row file cut short (a crashed copy, a full disk) is refused when it
  is opened, naming the file and the sizes; the original reads on."""
  _, kwargs = table
  good = streaming.row_file(streaming.load_streaming(kwargs, write=False))
  words = good.layout.words
  cut = tmp_path / streaming.ROWS_FILE
  cut.write_bytes(good.path.read_bytes()[: -words * 4])
  with pytest.raises(DataError) as e:
    row_files.RowFile(cut, good.layout, ROWS)
  message = str(e.value)
  assert '\n' not in message and str(cut) in message
  assert f'holds {(ROWS - 1) * words * 4:,} bytes' in message
  assert f'expected {ROWS * words * 4:,}' in message
  # Rows read back are the prepared rows (the in-memory split's).
  from mtl.data import DATASETS

  memory = DATASETS['table'](**kwargs).splits['train']
  idx = np.array([ROWS - 1, 0, 7, 7])
  jax.tree.map(
    np.testing.assert_array_equal,
    good.take(idx),
    pipeline.take_rows(memory, idx),
  )
