"""Examples/s of data-parallel mtl-train on 1, 2, 4 and 8 emulated CPU devices.

  python experiments/scaling.py [--config=configs/census_mmoe.py]
      [--devices=1,2,4,8] [--processes=1] [--epochs=2]

Each point is one `mtl-train` process with `--num_cpu_devices=N`, every
device used (`parallel.num_devices=0`), host batches; with --processes=P the
N devices are spread over P processes joined by jax.distributed
(launch/multiprocess_cpu.sh). The number reported is the run's own
`train_examples_per_s` (epochs after the first, which compiles).

CPU emulation splits the same 2 cores N ways: this proves the data-parallel
path runs and agrees, it does not measure speed-up. Writes
experiments/results/scaling.json and scaling.md.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / 'experiments' / 'results'


def _run(config, n, processes, epochs, backend, workdir):
  flags = [
    f'--config.num_epochs={epochs}',
    f'--config.parallel.backend={backend}',
    '--config.progress_bar=false',
    '--config.select_best=false',
    '--config.checkpoint.every_steps=1000000',
  ]
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  bin_dir = str(pathlib.Path(sys.executable).parent)
  env['PATH'] = f'{bin_dir}:{env.get("PATH", "")}'
  if processes == 1:
    cmd = [
      'mtl-train',
      f'--config={config}',
      f'--workdir={workdir}',
      f'--num_cpu_devices={n}',
      '--config.parallel.num_devices=0',
      '--config.input_mode=host',
      *flags,
    ]
  else:
    cmd = [
      'launch/multiprocess_cpu.sh',
      str(processes),
      str(n // processes),
      config,
      str(workdir),
      *flags,
    ]
  proc = subprocess.run(
    cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600
  )
  if proc.returncode:
    sys.exit(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
  return json.loads((workdir / 'results.json').read_text())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/census_mmoe.py')
  parser.add_argument('--devices', default='1,2,4,8')
  parser.add_argument('--processes', type=int, default=1)
  parser.add_argument('--epochs', type=int, default=2)
  parser.add_argument('--backend', default='pmap')
  args = parser.parse_args()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for n in (int(x) for x in args.devices.split(',')):
      if n % args.processes:
        sys.exit(f'--devices {n} is not divisible by --processes')
      workdir = pathlib.Path(tmp) / f'{n}'
      r = _run(
        args.config, n, args.processes, args.epochs, args.backend, workdir
      )
      row = {
        'devices': n,
        'processes': args.processes,
        'backend': r['parallel_backend'] or 'single-device jit',
        'examples_per_s': r['train_examples_per_s'],
        'test': r['test'],
      }
      print(json.dumps(row), flush=True)
      rows.append(row)
  out = {
    'config': args.config,
    'epochs': args.epochs,
    'machine': f'{platform.machine()}, {os.cpu_count()} cores (CPU emulation)',
    'rows': rows,
  }
  RESULTS.mkdir(parents=True, exist_ok=True)
  suffix = '' if args.processes == 1 else f'_{args.processes}proc'
  (RESULTS / f'scaling{suffix}.json').write_text(json.dumps(out, indent=2))
  lines = [
    f'Data-parallel `{args.config}` on emulated CPU devices '
    f'({out["machine"]}); correctness, not speed.',
    '',
    '| devices | processes | step | examples/s | test AUC / MSE |',
    '|---:|---:|---|---:|---|',
  ]
  for row in rows:
    test = ', '.join(
      f'{k.split("/", 1)[1]} {v:.4f}' for k, v in row['test'].items()
    )
    lines.append(
      f'| {row["devices"]} | {row["processes"]} | {row["backend"]} | '
      f'{row["examples_per_s"]:,.0f} | {test} |'
    )
  (RESULTS / f'scaling{suffix}.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
