"""Training on a table prepared on Apache Beam equals training on the same
table prepared in process.

  python experiments/beam_training.py [--rows=10000000] [--train_epochs=1]
      [--root=workdirs/scale]

The scale table of `--rows` training rows (mtl/data/scale.py, configs/
scale.py) is prepared twice into fresh data dirs: in process, and on
Beam's DirectRunner with two worker processes (mtl/data/beam_prepare.py;
scale_streaming.PREPARE_WITH['beam']). Every file of the two prepared
directories is compared byte for byte; then configs/scale.py trains
`--train_epochs` epochs in input_mode 'stream' on each (lazy Adam on
tables of `--sparse_rows` rows or more), and the two
results.json are compared key by key, leaving out the wall time, the
examples/s and the data directory's path (the config's data_dir). Writes
experiments/results/beam_training.json and .md (or --out).
"""

import filecmp
import json
import pathlib
import shutil
import sys
import time

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ and experiments/

from experiments import harness, scale_streaming  # noqa: E402

_ROWS = flags.DEFINE_integer('rows', 10_000_000, 'Training rows.')
_EPOCHS = flags.DEFINE_integer('train_epochs', 1, 'Epochs of each run.')
_SPARSE = flags.DEFINE_integer(
  'sparse_rows',
  100_000,
  'optimizer.sparse.min_rows: tables of at least this many rows get lazy '
  "Adam (0: the config's dense Adam, ~7x slower on the 1M-id tables).",
)
_ROOT = scale_streaming._ROOT  # noqa: SLF001 -- --root, its flag.
harness.define_flags(out='beam_training')
FLAGS = flags.FLAGS
HOWS = ('process', 'beam')
# What may differ between two runs of the same steps on the same data.
UNCOMPARED = ('wall_time_s', 'train_examples_per_s')


def prepared_files(data_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  """{path under the version directory: file} of a prepared table."""
  (version,) = data_dir.glob('table/*/1.0.0')
  return {
    str(p.relative_to(version)): p
    for p in sorted(version.rglob('*'))
    if p.is_file()
  }


def comparable(results: dict) -> dict:
  out = {k: v for k, v in results.items() if k not in UNCOMPARED}
  out['dataset'] = {
    k: v
    for k, v in out['dataset'].items()
    if k not in ('prepared_dir', 'data_dir')
  }
  return out


def main(argv):
  del argv
  rows, root = _ROWS.value, pathlib.Path(_ROOT.value)
  base = root / 'beam_training'
  shutil.rmtree(base, ignore_errors=True)
  record = {'rows': rows, 'epochs': _EPOCHS.value, 'prepare': {}}
  files = {}
  for how in HOWS:
    data_dir = base / f'tfds_{how}'
    record['prepare'][how] = scale_streaming.prepare_table(
      rows, root, data_dir, scale_streaming.PREPARE_WITH[how]
    )
    files[how] = prepared_files(data_dir)
  names = sorted(files['process'])
  differ = [
    n
    for n in names
    if n not in files['beam']
    or not filecmp.cmp(files['process'][n], files['beam'][n], shallow=False)
  ]
  record['files'] = {
    'compared': len(names),
    'bytes': sum(p.stat().st_size for p in files['process'].values()),
    'differ': differ + sorted(set(files['beam']) - set(names)),
  }
  results = {}
  for how in HOWS:
    workdir = base / f'run_{how}'
    code = scale_streaming._TRAIN.format(  # noqa: SLF001
      rows=str(rows),
      mode='stream',
      epochs=_EPOCHS.value,
      data_dir=str(base / f'tfds_{how}'),
      workdir=str(workdir),
      every=0,
      sparse_min_rows=_SPARSE.value,
    )
    start = time.time()
    found = scale_streaming._child(code, root)  # noqa: SLF001
    found['seconds'] = time.time() - start
    record[f'train_{how}'] = found
    results[how] = json.loads((workdir / 'results.json').read_text())
  a, b = (comparable(results[h]) for h in HOWS)
  record['results_equal'] = a == b
  record['results_differ'] = sorted(k for k in a if a.get(k) != b.get(k))
  record['test'] = {h: results[h]['test'] for h in HOWS}
  record['machine'] = harness.machine_facts()
  prep = record['prepare']
  lines = [
    f'## Training on the Beam-prepared {rows:,}-row scale table',
    '',
    *harness.markdown_table(
      ['prepared', 'seconds', 'rows/s', 'peak RSS GB (launcher; a worker)'],
      [
        [
          'in process' if h == 'process' else 'Beam DirectRunner, 2 workers',
          f'{prep[h]["seconds"]:.1f}',
          f'{prep[h]["rows_per_s"]:,.0f}',
          f'{prep[h]["peak_rss_gb"]:.2f}'
          + (f'; {prep[h]["worker_peak_rss_gb"]:.2f}' if h == 'beam' else ''),
        ]
        for h in HOWS
      ],
      'lrrr',
    ),
    '',
    f'Prepared files compared byte for byte: {record["files"]["compared"]} '
    f'({record["files"]["bytes"] / 1e9:.2f} GB); differing: '
    f'{", ".join(record["files"]["differ"]) or "none"}.',
    '',
    f'configs/scale.py, input_mode stream, {_EPOCHS.value} epoch(s) on each: '
    f'results.json equal (all but {", ".join(UNCOMPARED)} and the data '
    f'directory): **{record["results_equal"]}**'
    + (
      f' (differ: {", ".join(record["results_differ"])})'
      if record['results_differ']
      else ''
    )
    + '.',
    '',
    *harness.markdown_table(
      ['prepared', *sorted(results['process']['test'])],
      [
        [h, *(f'{v:.6f}' for _, v in sorted(results[h]['test'].items()))]
        for h in HOWS
      ],
    ),
    '',
  ]
  harness.write_results('beam_training', record, lines, out=FLAGS.out)


if __name__ == '__main__':
  harness.run_main(main)
