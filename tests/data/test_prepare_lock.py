"""Two processes that find the same table unprepared (two runs of one
sweep) prepare it once: the second waits on cache.preparing's lock, then
reads what the first wrote, instead of failing to move its own finished
directory over the first's (TFDS's FileExistsError)."""

import multiprocessing

import numpy as np
import pandas as pd


def _load(path, data_dir, queue):
  from mtl.data import DATASETS

  ds = DATASETS['table'](
    path=path,
    features={'user': {'kind': 'categorical'}, 'x': {'kind': 'dense'}},
    tasks={'y': {'label': 'y'}},
    data_dir=data_dir,
    chunksize=64,
  )
  queue.put((ds.stats['prepared_dir'], ds.splits['train']['dense'].sum()))


def test_two_processes_prepare_one_table_once(tmp_path):
  rng = np.random.default_rng(0)
  n = 20_000
  pd.DataFrame(
    {
      'user': rng.integers(0, 50, n),
      'x': rng.normal(size=n).round(3),
      'y': rng.integers(0, 2, n),
    }
  ).to_csv(tmp_path / 't.csv', index=False)
  ctx = multiprocessing.get_context('spawn')
  queue = ctx.Queue()
  args = (str(tmp_path / 't.csv'), str(tmp_path / 'tfds'), queue)
  procs = [ctx.Process(target=_load, args=args) for _ in range(2)]
  for p in procs:
    p.start()
  for p in procs:
    p.join(300)
  assert [p.exitcode for p in procs] == [0, 0]
  (dir_a, sum_a), (dir_b, sum_b) = queue.get(), queue.get()
  assert dir_a == dir_b and sum_a == sum_b
  config = tmp_path / 'tfds' / 'table'
  # One prepared version directory, no leftover incomplete one.
  found = sorted(p.name for c in config.iterdir() for p in c.iterdir())
  assert found == ['.prepare.lock', '1.0.0'], found
