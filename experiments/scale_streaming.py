"""The streaming parts of experiments/scale_benchmark.py.

  python experiments/scale_benchmark.py --parts=prepare,modes,epoch
      [--memory_rows=1000000] [--scale_rows=50000000] [--root=workdirs/scale]

(a) `modes` (`part_modes`): the same model (configs/scale.py, MMoE) and
    data that fits in memory (`--memory_rows` training rows) trained
    `--epochs` epochs in each of input_mode device, host and stream;
    examples/s is the trainer's own (results.json train_examples_per_s: the
    epochs after the first, so compilation is left out) and the peak RSS of
    each run's process. Goal: stream >= 0.7x the in-memory modes.
(b) `epoch` (`part_epoch`): one streaming epoch over the `--scale_rows`
    training split: the trainer's reader (mtl/data/streaming.py, the
    epoch's permutation, each batch read by grain and put on the device)
    over every full batch, in a subprocess of its own; rows/s and its peak
    RSS (getrusage ru_maxrss). Then the trainer itself in stream mode on
    that split for `--train_seconds`, stopped by SIGTERM, or with
    `--train_epoch` for one whole epoch and its evaluation (streamed too):
    its examples/s and peak RSS with the model and optimizer state. Goal:
    peak RSS < 2 GB.
(c) `prepare` (`part_prepare`): the `table` preparation of the
    `--prepare_rows` tables (default: the `--scale_rows` one;
    mtl/data/table_builder.py), each in a subprocess of its own into a
    fresh data dir (<root>/tfds_prepare, emptied first): seconds, rows/s
    over every split, CPU seconds and peak RSS, beside the figures
    recorded for the builder before it (PREPARE_BEFORE). Goal at 50M rows:
    <= 200 s (>= 250k rows/s) and <= 2 GB.

The tables are generated (mtl/data/scale.py) and prepared under `--root`
once and reused.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ and experiments/

from experiments import harness  # noqa: E402

_MEMORY_ROWS = flags.DEFINE_integer('memory_rows', 1_000_000, '(a) rows.')
_SCALE_ROWS = flags.DEFINE_integer('scale_rows', 50_000_000, '(b) rows.')
_EPOCHS = flags.DEFINE_integer('epochs', 3, '(a) epochs per mode.')
_TRAIN_SECONDS = flags.DEFINE_integer('train_seconds', 240, '(b) trainer.')
_TRAIN_EPOCH = flags.DEFINE_bool(
  'train_epoch', False, '(b) the trainer for a whole epoch instead.'
)
_SPARSE_MIN_ROWS = flags.DEFINE_integer(
  'sparse_min_rows',
  0,
  "(b) trainer: optimizer.sparse.min_rows (0: the config's, dense Adam); "
  'tables of at least this many rows get lazy Adam.',
)
_ROOT = flags.DEFINE_string('root', 'workdirs/scale', 'Tables and caches.')
_PREPARE_ROWS = flags.DEFINE_list(
  'prepare_rows', None, '(c) table sizes (default: --scale_rows).'
)
_PREPARE_WITH = flags.DEFINE_list(
  'prepare_with', ['process'], "(c) 'process' and/or 'beam' (PREPARE_WITH)."
)
# The builder before table_builder's numeric columns, integer lookups and
# encoding threads, as experiments/results/scale_prepare_50m.md recorded it
# (2026-12-02, commit b2c5287, this 2-core machine at load 1.06).
PREPARE_BEFORE = {50_000_000: {'seconds': 816.2, 'peak_rss_gb': 2.68}}
PREPARE_GOAL = {'seconds': 200.0, 'peak_rss_gb': 2.0}
MODES = ('device', 'host', 'stream')
GOAL_RATIO, GOAL_RSS_GB = 0.7, 2.0


def ensure_table(rows: int, root) -> pathlib.Path:
  """<root>/scale_<rows>/, generated unless it is there."""
  from configs import scale as scale_config
  from mtl.data import scale

  folder = scale_config.scale_dir(rows, root)
  if not (folder / 'test.parquet').exists():
    scale.write_scale_table(folder, rows=rows)
  return folder


def _env(root) -> dict:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(MTL_SCALE_DIR=str(root), JAX_PLATFORMS='cpu')
  return env


def _child(code: str, root, timeout=None, stop_after=None) -> dict:
  """Runs python `code` in a subprocess; its JSON line plus peak RSS (GB).

  `stop_after` seconds: SIGTERM then (the trainer saves and exits 143).
  The peak is the child's own ru_maxrss, printed by the child at exit.
  """
  wrapped = (
    'import atexit, json, resource\n'
    'atexit.register(lambda: print("RSS " + json.dumps(resource.getrusage('
    'resource.RUSAGE_SELF).ru_maxrss), flush=True))\n' + code
  )
  proc = subprocess.Popen(
    [sys.executable, '-c', wrapped],
    cwd=REPO,
    env=_env(root),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  if stop_after is not None:
    try:
      proc.wait(timeout=stop_after)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=timeout)
  found = {}
  for line in out.splitlines():
    if line.startswith('RSS '):
      found['peak_rss_gb'] = int(line[4:]) * 1024 / 1e9  # ru_maxrss: KiB
    elif line.startswith('{'):
      found.update(json.loads(line))
  if 'peak_rss_gb' not in found:
    raise RuntimeError(f'child failed ({proc.returncode}): {err[-3000:]}')
  found['returncode'] = proc.returncode
  return found


_TRAIN = """
import json, sys
sys.path.insert(0, '.')
from configs import scale
from mtl.shell import trainer
config = scale.get_config({rows!r})
config.input_mode = {mode!r}
config.num_epochs = {epochs}
config.dataset.data_dir = {data_dir!r}
config.progress_bar = False
config.checkpoint.every_steps = {every}
if {sparse_min_rows}:
  config.optimizer.sparse.min_rows = {sparse_min_rows}
r = trainer.train(config, {workdir!r})
print(json.dumps({{'examples_per_s': r['train_examples_per_s'],
                   'steps': r['steps'], 'wall_time_s': r['wall_time_s'],
                   'test': r['test']}}))
"""


def compare_modes(rows: int, root, *, epochs: int = 3, modes=MODES) -> dict:
  """(a) {mode: examples/s, peak RSS, ...} of one config in each mode."""
  root = pathlib.Path(root)
  ensure_table(rows, root)
  out = {}
  for mode in modes:
    workdir = root / 'runs' / f'modes_{rows}_{mode}_{time.time():.0f}'
    code = _TRAIN.format(
      rows=str(rows),
      mode=mode,
      epochs=epochs,
      data_dir=str(root / 'tfds'),
      workdir=str(workdir),
      every=0,
      sparse_min_rows=0,
    )
    out[mode] = _child(code, root)
  return out


_EPOCH = """
import json, sys, time
sys.path.insert(0, '.')
import jax, numpy as np
from configs import scale
from mtl.data import pipeline, streaming
config = scale.get_config({rows!r})
kw = config.dataset.to_dict()
kw['data_dir'] = {data_dir!r}
t0 = time.time()
ds = streaming.load_streaming(kw)
rows = streaming.row_file(ds)
t1 = time.time()
key = jax.random.split(jax.random.key(0))[1]
perm = np.asarray(pipeline.epoch_permutation(key, 0, rows.num_rows))
t2 = time.time()
it = streaming.epoch_iterator(rows, perm, {batch})
n = 0
for batch in it:
  jax.block_until_ready(jax.device_put(batch))
  n += batch['labels'].shape[1]
t3 = time.time()
print(json.dumps({{'train_rows': rows.num_rows, 'rows_read': n,
  'load_s': t1 - t0, 'permutation_s': t2 - t1, 'epoch_s': t3 - t2,
  'rows_per_s': n / (t3 - t2)}}))
"""


def stream_epoch(rows: int, root, *, batch_size: int = 1024) -> dict:
  """(b) One streaming epoch's reading over `rows` training rows."""
  root = pathlib.Path(root)
  ensure_table(rows, root)
  code = _EPOCH.format(
    rows=str(rows), data_dir=str(root / 'tfds'), batch=batch_size
  )
  return _child(code, root)


_PREPARE = """
import inspect, json, os, resource, sys, threading, time
sys.path.insert(0, '.')
peaks = {{}}  # descendant pid -> its largest sampled VmRSS (bytes)
def sample():
  me = os.getpid()
  while True:
    parent = {{}}
    for pid in filter(str.isdigit, os.listdir('/proc')):
      try:
        with open(f'/proc/{{pid}}/stat') as f:
          parent[int(pid)] = int(f.read().rsplit(')', 1)[1].split()[1])
      except OSError:
        pass
    for pid in parent:
      up = parent.get(pid)
      while up and up != me:
        up = parent.get(up)
      if up != me:
        continue
      try:
        with open(f'/proc/{{pid}}/status') as f:
          rss = [l for l in f if l.startswith('VmRSS')]
        kb = int(rss[0].split()[1]) if rss else 0
      except OSError:
        continue
      peaks[pid] = max(peaks.get(pid, 0), kb * 1024)
    time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()
from configs import scale
from mtl.data import prepared
from mtl.data import table as tl
config = scale.get_config({rows!r})
kw = config.dataset.to_dict()
kw['data_dir'] = {data_dir!r}
kw['beam_options'] = {beam!r}
kw.pop('process_index', None), kw.pop('process_count', None)
params = inspect.signature(tl.load_table).parameters
described = tl.describe(**({{k: p.default for k, p in params.items()}} | kw))
builder = described.make_builder()
if prepared.is_prepared(builder):
  print(json.dumps({{'reused': True}}))
else:
  t0 = time.time()
  described.prepare(builder)
  seconds = time.time() - t0
  splits = ('train', 'validation', 'test')
  counts = {{s: prepared.num_rows(builder, s) for s in splits}}
  usage = resource.getrusage(resource.RUSAGE_SELF)
  workers = resource.getrusage(resource.RUSAGE_CHILDREN)
  print(json.dumps({{'reused': False, 'seconds': seconds, 'rows': counts,
    'rows_per_s': sum(counts.values()) / seconds,
    'cpu_s': usage.ru_utime + usage.ru_stime + workers.ru_utime
      + workers.ru_stime,
    'worker_peak_rss_gb': max(peaks.values(), default=0) / 1e9,
    'processes': len(peaks)}}))
"""


# (c) --prepare_with: in this process, or on Beam's DirectRunner with two
# worker processes (mtl/data/beam_prepare.py).
PREPARE_WITH = {
  'process': None,
  'beam': ('--direct_num_workers=2', '--direct_running_mode=multi_processing'),
}


def prepare_table(rows: int, root, data_dir=None, beam=None) -> dict:
  """(c) The `table` preparation of configs/scale.py:<rows>, timed; into
  `data_dir` (default <root>/tfds, where the other parts read it); on Beam
  with pipeline flags `beam`. CPU seconds count the Beam workers too;
  worker_peak_rss_gb is the largest VmRSS of any process it started,
  sampled every 0.2 s (getrusage's ru_maxrss of children counts the
  launcher's own pages at fork time)."""
  root = pathlib.Path(root)
  ensure_table(rows, root)
  data_dir = data_dir or root / 'tfds'
  code = _PREPARE.format(rows=str(rows), data_dir=str(data_dir), beam=beam)
  return _child(code, root)


def train_rss(
  rows: int, root, *, seconds: int | None = 240, sparse_min_rows: int = 0
) -> dict:
  """(b) The stream-mode trainer on `rows` rows for `seconds`, then
  SIGTERM: its peak RSS and the steps it reached. seconds=None: one whole
  epoch and the evaluation, with its examples/s and test metrics too."""
  root = pathlib.Path(root)
  ensure_table(rows, root)
  workdir = root / 'runs' / f'train_{rows}_{time.time():.0f}'
  code = _TRAIN.format(
    rows=str(rows),
    mode='stream',
    epochs=1,
    data_dir=str(root / 'tfds'),
    workdir=str(workdir),
    every=0,
    sparse_min_rows=sparse_min_rows,
  )
  t = time.time()
  found = _child(code, root, stop_after=seconds)
  found['seconds'] = time.time() - t
  steps = sorted(
    int(p.name) for p in (workdir / 'checkpoints').glob('*') if p.name.isdigit()
  )
  found.setdefault('steps', steps[-1] if steps else 0)
  return found


def markdown(record: dict) -> list[str]:
  lines = ['## Streaming input on the scale dataset', '']
  modes = record.get('modes')
  if modes:
    best = max(modes[m]['examples_per_s'] for m in modes if m != 'stream')
    lines += [
      f'(a) {record["memory_rows"]:,} training rows, configs/scale.py '
      f'(MMoE), {record["epochs"]} epochs; examples/s of the epochs after '
      'the first.',
      '',
      *harness.markdown_table(
        ['input_mode', 'examples/s', 'vs best in-memory', 'peak RSS GB'],
        [
          [
            m,
            f'{r["examples_per_s"]:,.0f}',
            f'{r["examples_per_s"] / best:.2f}x',
            f'{r["peak_rss_gb"]:.2f}',
          ]
          for m, r in modes.items()
        ],
      ),
      '',
      f'Goal: stream >= {GOAL_RATIO}x the in-memory examples/s.',
      '',
    ]
  epoch = record.get('epoch')
  if epoch:
    lines += [
      f'(b) one streaming epoch over {epoch["train_rows"]:,} training rows '
      f'(batch 1024): {epoch["rows_per_s"]:,.0f} rows/s read and put on '
      f'the device ({epoch["epoch_s"]:.0f} s; the permutation '
      f'{epoch["permutation_s"]:.1f} s), peak RSS {epoch["peak_rss_gb"]:.2f}'
      f' GB (goal < {GOAL_RSS_GB} GB).',
      '',
    ]
  train = record.get('train')
  if train and 'examples_per_s' in train:
    lines += [
      f'The stream-mode trainer, one whole epoch on that split and its '
      f'streamed evaluation ({train["steps"]:,} steps, '
      f'{train["seconds"]:.0f} s in all): {train["examples_per_s"]:,.0f} '
      f'examples/s, peak RSS {train["peak_rss_gb"]:.2f} GB (goal < '
      f'{GOAL_RSS_GB} GB); test '
      + ', '.join(f'{k} {v:.4f}' for k, v in sorted(train['test'].items()))
      + '.',
      '',
    ]
  elif train:
    lines += [
      f'The stream-mode trainer on that split ({train["seconds"]:.0f} s, '
      f'stopped by SIGTERM at step {train["steps"]}): peak RSS '
      f'{train["peak_rss_gb"]:.2f} GB.',
      '',
    ]
  return lines


def part_modes():
  """(a) as a scale_benchmark part: (record, markdown lines)."""
  record = {'memory_rows': _MEMORY_ROWS.value, 'epochs': _EPOCHS.value}
  record['modes'] = compare_modes(
    _MEMORY_ROWS.value, pathlib.Path(_ROOT.value), epochs=_EPOCHS.value
  )
  return record, markdown(record)


def part_epoch():
  """(b) as a scale_benchmark part: (record, markdown lines)."""
  root = pathlib.Path(_ROOT.value)
  epoch = stream_epoch(_SCALE_ROWS.value, root)
  record = {'epoch': epoch}
  if _TRAIN_EPOCH.value or _TRAIN_SECONDS.value:
    record['train'] = train_rss(
      _SCALE_ROWS.value,
      root,
      seconds=None if _TRAIN_EPOCH.value else _TRAIN_SECONDS.value,
      sparse_min_rows=_SPARSE_MIN_ROWS.value,
    )
    record['train']['sparse_min_rows'] = _SPARSE_MIN_ROWS.value
  return record, markdown(record)


def _prepare_row(rows: int, how: str, prep: dict) -> list[str]:
  n = sum(prep['rows'].values())
  before = PREPARE_BEFORE.get(rows) if how == 'process' else None
  beam = how == 'beam'
  return [
    f'{rows:,}',
    'Beam DirectRunner, 2 workers' if beam else 'in process',
    f'{n:,}',
    f'{prep["seconds"]:.1f}',
    f'{prep["rows_per_s"]:,.0f}',
    f'{prep["cpu_s"]:.0f}',
    f'{prep["peak_rss_gb"]:.2f}'
    + (f' (+ {prep["worker_peak_rss_gb"]:.2f} a worker)' if beam else ''),
    (
      f'{before["seconds"]:.1f} s, {n / before["seconds"]:,.0f} rows/s, '
      f'{before["peak_rss_gb"]:.2f} GB'
      if before
      else '-'
    ),
  ]


def part_prepare():
  """(c) as a scale_benchmark part: (record, markdown lines)."""
  import shutil

  root = pathlib.Path(_ROOT.value)
  sizes = [int(float(r)) for r in _PREPARE_ROWS.value or [_SCALE_ROWS.value]]
  unknown = sorted(set(_PREPARE_WITH.value) - set(PREPARE_WITH))
  if unknown:
    raise SystemExit(
      f'--prepare_with has {", ".join(unknown)}, expected some of '
      f'{", ".join(PREPARE_WITH)}'
    )
  record = {'prepare': {}, 'before': PREPARE_BEFORE, 'goal': PREPARE_GOAL}
  table = []
  for rows in sizes:
    for how in _PREPARE_WITH.value:
      fresh = root / 'tfds_prepare'
      shutil.rmtree(fresh, ignore_errors=True)
      prep = prepare_table(rows, root, fresh, PREPARE_WITH[how])
      shutil.rmtree(fresh, ignore_errors=True)
      key = str(rows) if how == 'process' else f'{rows}_{how}'
      record['prepare'][key] = prep
      table.append(_prepare_row(rows, how, prep))
  lines = [
    '(c) preparing the scale table through the `table` dataset (training '
    'rows as given, 1% more each of validation and test; in a process of '
    'its own, into an empty data dir). On Beam: the launching process '
    "(the plan, the shards' list) and the largest of its workers' peaks; "
    'CPU seconds count the workers.',
    '',
    *harness.markdown_table(
      [
        'training rows',
        'prepared',
        'rows (all splits)',
        'seconds',
        'rows/s',
        'CPU s',
        'peak RSS GB',
        'the builder before',
      ],
      table,
      'rlrrrrrl',
    ),
    '',
    f'Goal at 50M rows: <= {PREPARE_GOAL["seconds"]:.0f} s and <= '
    f'{PREPARE_GOAL["peak_rss_gb"]:g} GB peak RSS.',
    '',
  ]
  return record, lines


PARTS = {'prepare': part_prepare, 'modes': part_modes, 'epoch': part_epoch}
