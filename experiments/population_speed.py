"""Examples/s of a population of K members vs K sequential single runs.

  python experiments/population_speed.py [--config=configs/census_mmoe.py]
      [--sizes=1,4,16] [--steps=32] [--repeats=5]

Times the compiled training program alone, as `mtl-train` runs it: the
dataset on the device, `--steps` steps per dispatch (lax.scan), one warm-up
dispatch (compilation), then `--repeats` timed dispatches; the median is
reported. K sequential single runs train at the single run's examples/s, so
the speed-up of a population of K is its examples/s (K x batch x steps /
time) over the single run's. Writes experiments/results/population_speed.json
and .md (or --out).

With --end_to_end=K it instead times whole commands, wall clock, as a user
would run them: K sequential `mtl-train` runs (seeds 0..K-1) against one
`mtl-train --config.population.size=K` (everything included: start-up, data
loading, compilation, per-epoch evaluation, checkpoints), and writes
population_end_to_end.{json,md} beside --out. `--config.<key>=<value>`
overrides reach those commands too.
"""

import json
import os
import pathlib
import sys
import time

from absl import flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402
from experiments.harness import timing  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  'config', str(REPO / harness.census_config_path('mmoe')), 'Config file.'
)
_SIZES = flags.DEFINE_list('sizes', ['1', '4', '16'], 'Population sizes.')
_STEPS = flags.DEFINE_integer('steps', 32, 'Steps per timed dispatch.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed dispatches.')
_END_TO_END = flags.DEFINE_integer(
  'end_to_end', 0, 'K: time K sequential runs vs a population of K.'
)
_EPOCHS = flags.DEFINE_integer('epochs', 0, 'End-to-end epochs (0: config).')
harness.define_flags(out='population_speed')
FLAGS = flags.FLAGS


def end_to_end(config_path, k, epochs, overrides=()):
  import shutil
  import subprocess
  import tempfile

  env = {key: v for key, v in os.environ.items() if key != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  root = pathlib.Path(tempfile.mkdtemp(prefix='mtl_e2e_'))
  base = [
    sys.executable,
    '-m',
    'mtl.shell.main',
    f'--config={config_path}',
    *overrides,
    '--config.progress_bar=false',
  ] + ([f'--config.num_epochs={epochs}'] if epochs else [])

  def timed(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0

  sequential = sum(
    timed(base + [f'--workdir={root}/single_{s}', f'--config.seed={s}'])
    for s in range(k)
  )
  pop = timed(base + [f'--workdir={root}/pop', f'--config.population.size={k}'])
  results = json.loads((root / 'pop/results.json').read_text())
  shutil.rmtree(root)
  first = results['members'][0]
  return {
    'members': k,
    'epochs': first['num_epochs'],
    'steps': first['steps'],
    'sequential_s': sequential,
    'population_s': pop,
    'speedup': sequential / pop,
  }


def main(argv):
  del argv
  if _END_TO_END.value:
    config_path = config_flags.get_config_filename(FLAGS['config'])
    overrides = [
      f'--config.{k}={v}'
      for k, v in config_flags.get_override_values(FLAGS['config']).items()
    ]
    r = end_to_end(config_path, _END_TO_END.value, _EPOCHS.value, overrides)
    md = harness.markdown_table(
      [
        'members K',
        'epochs',
        'K sequential runs (s)',
        'population (s)',
        'speed-up',
      ],
      [
        [
          r['members'],
          r['epochs'],
          f'{r["sequential_s"]:.0f}',
          f'{r["population_s"]:.0f}',
          f'{r["speedup"]:.2f}',
        ]
      ],
      'rrrrr',
    )
    stem = harness.results_stem('population_speed', FLAGS.out)
    harness.write_results(
      'population_end_to_end',
      r,
      md,
      out=stem.with_name('population_end_to_end'),
    )
    return
  import jax

  from mtl.shell import build

  config = _CONFIG.value
  dataset = build.load_dataset(config)
  rows = []
  for size in [int(s) for s in _SIZES.value]:
    r = timing.examples_per_s(
      config, dataset, members=size, repeats=_REPEATS.value, steps=_STEPS.value
    )
    row = {
      'size': size,
      'ms_per_step': r['ms_per_step'],
      'examples_per_s': r['examples_per_s'],
    }
    rows.append(row)
    print(
      f'K={size:3d}  {row["ms_per_step"]:8.2f} ms/step  '
      f'{row["examples_per_s"]:12,.0f} examples/s',
      flush=True,
    )
  bs, k = r['batch_size'], r['steps_per_dispatch']
  facts = harness.machine_facts()
  base = next(r['examples_per_s'] for r in rows if r['size'] == 1)
  for r in rows:
    r['speedup_vs_sequential'] = r['examples_per_s'] / base
  record = {
    'config': config.model_name,
    'batch_size': bs,
    'steps_per_dispatch': k,
    'rows': rows,
    'jax': jax.__version__,
    'machine': f'{facts["machine"]}, {facts["cpus"]} cores',
  }
  lines = harness.markdown_table(
    ['members K', 'ms per step (all K)', 'examples/s', 'x K sequential runs'],
    [
      [
        r['size'],
        f'{r["ms_per_step"]:.2f}',
        f'{r["examples_per_s"]:,.0f}',
        f'{r["speedup_vs_sequential"]:.2f}',
      ]
      for r in rows
    ],
    'rrrr',
  )
  harness.write_results('population_speed', record, lines, out=FLAGS.out)


if __name__ == '__main__':
  harness.run_main(main)
