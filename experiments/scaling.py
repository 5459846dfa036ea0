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
experiments/results/scaling.json and scaling.md (scaling_<P>proc.* with
--processes=P; or --out).
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402

_CONFIG = flags.DEFINE_string(
  'config', harness.census_config_path('mmoe'), 'Config given to mtl-train.'
)
_DEVICES = flags.DEFINE_list('devices', ['1', '2', '4', '8'], 'Device counts.')
_PROCESSES = flags.DEFINE_integer('processes', 1, 'Processes per point.')
_EPOCHS = flags.DEFINE_integer('epochs', 2, 'Epochs per run.')
_BACKEND = flags.DEFINE_string('backend', 'pmap', 'pmap or shard_map.')
harness.define_flags(out='')  # Default: experiments/results/scaling[_Pproc].
FLAGS = flags.FLAGS


def _run(config, n, processes, epochs, backend, workdir):
  overrides = [
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
    cmd = [  # mtl-train, whatever the venv's entry point script says.
      sys.executable,
      '-m',
      'mtl.shell.main',
      f'--config={config}',
      f'--workdir={workdir}',
      f'--num_cpu_devices={n}',
      '--config.parallel.num_devices=0',
      '--config.input_mode=host',
      *overrides,
    ]
  else:
    cmd = [
      'launch/multiprocess_cpu.sh',
      str(processes),
      str(n // processes),
      config,
      str(workdir),
      *overrides,
    ]
  proc = subprocess.run(
    cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600
  )
  if proc.returncode:
    sys.exit(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
  return json.loads((workdir / 'results.json').read_text())


def main(argv):
  del argv
  processes = _PROCESSES.value
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for n in (int(x) for x in _DEVICES.value):
      if n % processes:
        sys.exit(f'--devices {n} is not divisible by --processes')
      workdir = pathlib.Path(tmp) / f'{n}'
      r = _run(
        _CONFIG.value, n, processes, _EPOCHS.value, _BACKEND.value, workdir
      )
      row = {
        'devices': n,
        'processes': processes,
        'backend': r['parallel_backend'] or 'single-device jit',
        'examples_per_s': r['train_examples_per_s'],
        'test': r['test'],
      }
      print(json.dumps(row), flush=True)
      rows.append(row)
  facts = harness.machine_facts()
  out = {
    'config': _CONFIG.value,
    'epochs': _EPOCHS.value,
    'machine': f'{facts["machine"]}, {facts["cpus"]} cores (CPU emulation)',
    'rows': rows,
  }
  lines = [
    f'Data-parallel `{_CONFIG.value}` on emulated CPU devices '
    f'({out["machine"]}); correctness, not speed.',
    '',
    *harness.markdown_table(
      ['devices', 'processes', 'step', 'examples/s', 'test AUC / MSE'],
      [
        [
          row['devices'],
          row['processes'],
          row['backend'],
          f'{row["examples_per_s"]:,.0f}',
          ', '.join(
            f'{k.split("/", 1)[1]} {v:.4f}' for k, v in row['test'].items()
          ),
        ]
        for row in rows
      ],
      'rrlrl',
    ),
  ]
  name = 'scaling' + ('' if processes == 1 else f'_{processes}proc')
  harness.write_results(name, out, lines, out=FLAGS.out)


if __name__ == '__main__':
  harness.run_main(main)
