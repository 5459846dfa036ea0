"""Embedding tables split by rows over devices: what a step costs, and a run
that replicated tables cannot start.

  python experiments/sharded_embeddings.py [--devices=8] [--rows=1000000]
      [--steps=20] [--repeats=3] [--scale_buckets=50000000]
      [--scale_steps=2000] [--skip_scale]

Two parts, both on `--devices` emulated CPU devices (this process sets
XLA_FLAGS before JAX starts):

1. Step time. A census-like MMoE (8 experts of 16, towers of 8, 10 dense
   features, 7 small categorical columns and one `--rows`-row id table,
   embeddings of 4, batch 1024 over the devices, Zipf ids) trained by the
   data-parallel step with the big table updated by lazy Adam, either
   replicated (every device holds it; ids and row gradients all-gathered)
   or split by rows (mtl/core/sharded_tables.py). Median ms per step of
   `--repeats` interleaved rounds of `--steps` steps after a warm-up; the
   bytes each device sends per step, from the routes' sizes
   (sharded_embedding.bytes_sent; ring all-gather for the replicated
   table). Goal: split <= 1.5x replicated.
2. Scale. The generated scale table (configs/scale.py) with its user ids
   hashed into `--scale_buckets` buckets at dim 16, lazy Adam, through
   `mtl-train`: replicated, the memory check stops it before any work (its
   one line is recorded); split by rows, it trains `--scale_steps` steps and
   evaluates, and its peak RSS is recorded. Goal: < 16 GB.

Writes experiments/results/sharded_embeddings.{json,md} (or --out).
"""

import os
import sys

_DEVICES = 8
for _arg in sys.argv[1:]:
  if _arg.startswith('--devices='):
    _DEVICES = int(_arg.split('=', 1)[1])
os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '')
  + f' --xla_force_host_platform_device_count={_DEVICES}'
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import functools  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402

flags.DEFINE_integer('devices', 8, 'Emulated CPU devices.')
_ROWS = flags.DEFINE_integer('rows', 1_000_000, 'Rows of the big table.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps per round.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Interleaved timed rounds.')
_BUCKETS = flags.DEFINE_integer(
  'scale_buckets', 50_000_000, 'Hash buckets of the scale user ids.'
)
_SCALE_STEPS = flags.DEFINE_integer('scale_steps', 2000, 'Scale run steps.')
_SCALE_BATCH = flags.DEFINE_integer('scale_batch', 256, 'Scale run batch.')
_SKIP_SCALE = flags.DEFINE_bool('skip_scale', False, 'Part 1 only.')
_WORK = flags.DEFINE_string(
  'workdir', '', 'Where the scale data and runs go (default: a temp dir).'
)
harness.define_flags(out='sharded_embeddings')
FLAGS = flags.FLAGS
GOAL_RATIO, GOAL_RSS = 1.5, 16e9
BATCH, DIM, SMALL = 1024, 4, 7


def _model_and_batches(rows: int, num_batches: int):
  import numpy as np

  from mtl.core.layers.embedding import Column
  from mtl.core.model import make_model

  vocab = (Column(rows, feature='user'),) + tuple(
    Column(50, feature=f'c{i}') for i in range(SMALL)
  )
  model = make_model(
    'mmoe',
    dict(num_experts=8, expert_hidden=(16,)),
    num_tasks=2,
    vocab_sizes=vocab,
    embed_dim=DIM,
    tower_hidden=(8,),
  )
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(num_batches):
    user = np.minimum(rng.zipf(1.2, BATCH), rows - 1)
    small = rng.integers(0, 50, (BATCH, SMALL))
    batches.append(
      {
        'dense': rng.normal(size=(BATCH, 10)).astype(np.float32),
        'sparse': np.concatenate([user[:, None], small], 1).astype(np.int32),
        'labels': rng.integers(0, 2, (2, BATCH)).astype(np.float32),
        'mask': np.ones((2, BATCH), np.float32),
      }
    )
  return model, batches


def _runner(model, batches, split: bool):
  """run(k) -> seconds for k steps (from a fresh state per call)."""
  import jax

  from mtl.core import optim, parallel, sharded_tables, train_state, train_step
  from mtl.core.layers.embedding import lookups
  from mtl.core.tasks import Task
  from mtl.core.weighting import WEIGHTINGS

  n = jax.device_count()
  tx = optim.make_optimizer(
    'adam',
    1e-3,
    sparse={'tables': ('user',), 'method': 'lazy_adam'},
    table_shapes=lookups(model.vocab_sizes, model.embed_dim)[1],
  )
  names = ('user',) if split else ()
  tx = tx._replace(sharded=names)
  w = WEIGHTINGS['equal']()
  step = train_step.make_train_step(
    model, tx, w, (Task('a'), Task('b')), steps_per_epoch=1, axis_name='data'
  )
  specs = None
  if split:
    specs = functools.partial(
      sharded_tables.specs, names=names, axis_name='data'
    )
  run = parallel.make_parallel_train_step(
    step, backend='shard_map', state_specs=specs
  )
  state = train_state.init_train_state(
    model, tx, w, train_step.features_of(batches[0]), num_tasks=2,
    key=jax.random.key(0),
  )  # fmt: skip
  if split:
    state = sharded_tables.shard_state(state, names, n)
  placed = [run.put_batch(b) for b in batches]
  holder = {'state': run.put_state(state)}

  def go(k: int) -> float:
    s = holder['state']
    start = time.perf_counter()
    for i in range(k):
      s, m = run.on_placed(s, placed[i % len(placed)])
    jax.block_until_ready(m)
    holder['state'] = s
    return time.perf_counter() - start

  return go


def step_times() -> dict:
  import jax

  from mtl.core import sharded_embedding

  n = jax.device_count()
  model, batches = _model_and_batches(_ROWS.value, 8)
  runs = {
    'replicated': _runner(model, batches, False),
    'split': _runner(model, batches, True),
  }
  for go in runs.values():
    go(3)  # Compile and warm up.
  times = {k: [] for k in runs}
  for _ in range(_REPEATS.value):
    for k, go in runs.items():
      times[k].append(1e3 * go(_STEPS.value) / _STEPS.value)
  ms = {k: statistics.median(v) for k, v in times.items()}
  ids = BATCH // n  # The big table's ids on each device a step.
  split = 2 * sharded_embedding.bytes_sent(ids, n, DIM, 4)  # lookup + rows
  replicated = (n - 1) * ids * (4 + DIM * 4)  # all-gather ids + gradients
  return {
    'devices': n,
    'rows': _ROWS.value,
    'dim': DIM,
    'batch': BATCH,
    'ms_per_step': ms,
    'ms_per_step_rounds': times,
    'ratio': ms['split'] / ms['replicated'],
    'bytes_sent_per_device': {'replicated': replicated, 'split': split},
    'capacity': sharded_embedding.capacity(ids, n),
    'table_bytes_per_device': {
      # lazy Adam: the table and two moments, float32.
      'replicated': _ROWS.value * DIM * 4 * 3,
      'split': sharded_embedding.rows_per_device(_ROWS.value, n) * DIM * 12,
    },
  }


def _scale_command(data_root, workdir, split: bool):
  rows = _SCALE_STEPS.value * _SCALE_BATCH.value
  config = [
    f'--config={REPO / "configs" / "scale.py"}:{rows}',
    f'--workdir={workdir}',
    f'--num_cpu_devices={FLAGS.devices}',
    '--config.input_mode=host',
    f'--config.batch_size={_SCALE_BATCH.value}',
    f'--config.eval_batch_size={8 * _SCALE_BATCH.value}',
    '--config.num_epochs=1',
    '--config.embedding.dim=16',
    '--config.optimizer.sparse.method=lazy_adam',
    "--config.optimizer.sparse.tables=('user_id',)",
    '--config.parallel.num_devices=0',
    '--config.parallel.backend=shard_map',
    f'--config.dataset.data_dir={data_root / "tfds"}',
    '--config.progress_bar=false',
  ]
  if split:
    config.append("--config.parallel.sharding.rows=('user_id',)")
  return [sys.executable, '-m', 'mtl.shell.main', *config]


def scale_run(root: pathlib.Path) -> dict:
  """The scale table with hashed user ids: replicated, then split."""
  from configs import scale
  from mtl.data.scale import write_scale_table

  rows = _SCALE_STEPS.value * _SCALE_BATCH.value
  folder = scale.scale_dir(rows, root)
  if not (folder / 'train.parquet').exists():
    write_scale_table(folder, rows=rows)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['MTL_SCALE_DIR'] = str(root)
  # The hashed user ids: a config file over configs/scale.py.
  cfg = root / 'scale_hashed.py'
  cfg.write_text(
    'from configs import scale\n\n\ndef get_config(arg):\n'
    '  c = scale.get_config(arg)\n'
    f"  c.dataset.features['user_id'] = {{'kind': 'categorical', "
    f"'hash_buckets': {_BUCKETS.value}}}\n"
    '  return c\n'
  )
  out = {'buckets': _BUCKETS.value, 'dim': 16, 'rows': rows}
  for split in (False, True):
    workdir = root / ('split' if split else 'replicated')
    command = _scale_command(root, workdir, split)
    command[3] = f'--config={cfg}:{rows}'
    env['PYTHONPATH'] = str(REPO)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(
      command, cwd=REPO, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    lines = proc.stderr.strip().splitlines()
    key = 'split' if split else 'replicated'
    out[key] = {
      'exit_code': proc.returncode,
      'seconds': seconds,
      # ru_maxrss of the children so far: the largest of them.
      'peak_rss_bytes': peak if peak > before * 1024 else None,
      'last_lines': [harness.portable(x) for x in lines[-4:]],
    }
    if split and proc.returncode == 0:
      results = json.loads((workdir / 'results.json').read_text())
      out[key]['steps'] = results['steps']
      out[key]['test'] = results['test']
      out[key]['layout'] = json.loads((workdir / 'sharding.json').read_text())[
        'tables'
      ]['user_id']
  return out


def markdown(record: dict) -> list[str]:
  s = record['step']
  ms, sent = s['ms_per_step'], s['bytes_sent_per_device']
  lines = [
    '# Embedding tables split by rows',
    '',
    f'Census-like MMoE, a {s["rows"]:,}-row id table at dim {s["dim"]} '
    f'updated by lazy Adam, batch {s["batch"]} over {s["devices"]} emulated '
    'CPU devices (the same 2 cores split 8 ways: a correctness-and-cost '
    'measurement, not a speed claim for real devices).',
    '',
    *harness.markdown_table(
      [
        'table',
        'ms / step',
        'bytes sent / device / step',
        'table + state bytes / device',
      ],
      [
        [
          k,
          f'{ms[k]:.1f}',
          f'{sent[k]:,}',
          f'{s["table_bytes_per_device"][k]:,}',
        ]
        for k in ('replicated', 'split')
      ],
    ),  # fmt: skip
    '',
    f'Split / replicated step time: **{s["ratio"]:.2f}x** (goal <= '
    f'{GOAL_RATIO}x); capacity C = {s["capacity"]} ids per owner bucket.',
  ]
  sc = record.get('scale')
  if sc:
    rep, spl = sc['replicated'], sc['split']
    lines += [
      '',
      f'## Scale: {sc["buckets"]:,} hashed user ids at dim {sc["dim"]}, '
      'lazy Adam',
      '',
      f'Replicated (exit {rep["exit_code"]}): `{rep["last_lines"][-1]}`',
      '',
    ]
    if spl['exit_code'] == 0:
      rss = spl['peak_rss_bytes']
      lines += [
        f'Split by rows: {spl["steps"]:,} steps and the evaluation in '
        f'{spl["seconds"]:.0f} s, peak RSS '
        f'{rss / 1e9:.2f} GB (goal < {GOAL_RSS / 1e9:.0f} GB); '
        f'{spl["layout"]["bytes_per_device"] / 1e9:.2f} GB of table and '
        'state a device. Test: '
        + ', '.join(f'{k} {v:.4f}' for k, v in spl['test'].items()),
      ]
    else:
      lines += [
        f'Split by rows FAILED (exit {spl["exit_code"]}): '
        f'`{spl["last_lines"][-1]}`'
      ]
  return lines


def main(argv):
  del argv
  record = {'step': step_times(), 'machine': harness.machine_facts()}
  print(json.dumps(record['step']['ms_per_step']), flush=True)
  if not _SKIP_SCALE.value:
    root = pathlib.Path(_WORK.value or tempfile.mkdtemp(prefix='mtl_shard_'))
    record['scale'] = scale_run(root)
  harness.write_results(
    'sharded_embeddings', record, markdown(record), out=FLAGS.out
  )


if __name__ == '__main__':
  harness.run_main(main)
