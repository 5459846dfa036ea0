"""Step time of each task-balancing method relative to equal weighting.

  python experiments/weighting_speed.py [--config=configs/census_mmoe.py]
      [--methods=equal,gradnorm,...] [--steps=64] [--repeats=5]

The census MMoE of the config, the dataset resident on the device, `--steps`
train steps per dispatch (lax.scan), one warm-up dispatch (compilation), then
`--repeats` timed dispatches; the median milliseconds per step of each method
and its ratio to `equal` are printed and written to
experiments/results/weighting_speed.json and .md (or --out). Goals:
loss-space methods <= 1.2x, GradNorm <= 1.5x, methods that read per-task
gradients <= 3x.
"""

import pathlib
import statistics
import sys
import time

from absl import flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ and experiments/

from experiments import harness  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  'config', str(REPO / harness.census_config_path('mmoe')), 'Config file.'
)
_METHODS = flags.DEFINE_list('methods', None, 'Default: every method.')
_STEPS = flags.DEFINE_integer('steps', 64, 'Steps per timed dispatch.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed dispatches.')
harness.define_flags(out='weighting_speed')
FLAGS = flags.FLAGS

GOALS = {'loss': 1.2, 'gradnorm': 1.5, 'gradient': 3.0}


def main(argv):
  del argv
  import jax
  import numpy as np

  from mtl.core import train_state, train_step
  from mtl.core.weighting import WEIGHTINGS
  from mtl.data import pipeline
  from mtl.shell import build

  config = _CONFIG.value
  dataset = build.load_dataset(config)
  split = dataset.splits['train']
  spe = pipeline.steps_per_epoch(dataset.num_rows('train'), config.batch_size)
  data = jax.device_put(split)
  methods = _METHODS.value or ['equal'] + sorted(set(WEIGHTINGS) - {'equal'})
  example = train_step.features_of(pipeline.take_rows(split, np.arange(2)))
  perm = pipeline.epoch_permutation(
    jax.random.key(0), 0, split['mask'].shape[1]
  )
  runs = {}
  for name in methods:  # Build and compile every method first.
    config.weighting_name = name
    model, tx, weighting = build.build(config, dataset, spe * config.num_epochs)
    state = train_state.init_train_state(
      model,
      tx,
      weighting,
      example,
      num_tasks=dataset.num_tasks,
      key=jax.random.key(0),
    )
    step = train_step.make_train_step(
      model, tx, weighting, dataset.tasks, steps_per_epoch=spe
    )
    run = jax.jit(
      train_step.make_scanned_steps(
        step, batch_size=config.batch_size, num_steps=_STEPS.value
      ),
      donate_argnums=0,
    )
    state, m = run(state, data, perm, 0)
    jax.block_until_ready((state, m))
    # What the step computes for it: nothing beyond the losses ('loss'),
    # per-task gradient norms of one layer ('gradnorm'), or per-task
    # gradients of the backbone ('gradient': whether it combines them or,
    # as ExcessMTL, only reads them).
    kind = (
      'loss'
      if not weighting.needs
      else 'gradnorm'
      if set(weighting.needs) == {'task_grad_norms'}
      else 'gradient'
    )
    runs[name] = [run, state, kind, []]
  # Round-robin timing: drift in the machine's speed hits every method alike
  # (measured: timing methods one after another put `fixed`, the same
  # program as `equal`, at 1.25x).
  for r in range(_REPEATS.value):
    first = ((r + 1) * _STEPS.value) % (spe - _STEPS.value)
    for entry in runs.values():
      run, state = entry[0], entry[1]
      t0 = time.perf_counter()
      state, m = run(state, data, perm, first)
      jax.block_until_ready((state, m))
      entry[3].append((time.perf_counter() - t0) / _STEPS.value * 1e3)
      entry[1] = state
  rows = []
  for name, (_, _, kind, times) in runs.items():
    rows.append(
      {'method': name, 'kind': kind, 'ms_per_step': statistics.median(times)}
    )
    print(f'{name:12s} {kind:9s} {statistics.median(times):7.2f} ms/step')
  base = next(r['ms_per_step'] for r in rows if r['method'] == 'equal')
  for r in rows:
    r['ratio_to_equal'] = r['ms_per_step'] / base
    r['goal'] = GOALS[r['kind']]
  record = {
    'config': config.model_name,
    'batch_size': config.batch_size,
    'steps_per_dispatch': _STEPS.value,
    'rows': rows,
    'jax': jax.__version__,
    'machine': machine(),
  }
  lines = harness.markdown_table(
    ['method', 'kind', 'ms/step', 'x equal', 'goal'],
    [
      [
        f'`{r["method"]}`',
        r['kind'],
        f'{r["ms_per_step"]:.2f}',
        f'{r["ratio_to_equal"]:.2f}',
        f'<= {r["goal"]}',
      ]
      for r in rows
    ],
    'llrrr',
  )
  harness.write_results('weighting_speed', record, lines, out=FLAGS.out)


def machine() -> str:
  facts = harness.machine_facts()
  return f'{facts["machine"]}, {facts["cpus"]} cores'


if __name__ == '__main__':
  harness.run_main(main)
