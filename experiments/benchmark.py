"""Training throughput of the census MMoE step in each input mode.

  python experiments/benchmark.py --config=configs/census_mmoe.py

Modes, all on the same data, model, batch (1024) and permutation:
  host        numpy batches gathered on the host, one jitted step per dispatch
  device      dataset resident on the device, one step per dispatch
  device_scan dataset resident, `--scan_steps` steps per dispatch (lax.scan)

Each mode runs one warm-up epoch (compilation), then `--repeats` timed epochs;
the median examples/s is printed and written to
experiments/results/benchmark.{json,md} (or --out). By default the model is
sized like torch-rechub's census MMoE example (see
experiments/peer_torch_rechub.py) so the two numbers compare like with like;
`--peer_sized=false` keeps the config's model.
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
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed epochs per mode.')
_SCAN_STEPS = flags.DEFINE_integer('scan_steps', 0, '0: a whole epoch.')
_PEER_SIZED = flags.DEFINE_bool(
  'peer_sized', True, "Use torch-rechub's census MMoE sizes."
)
harness.define_flags(out='benchmark')
FLAGS = flags.FLAGS

# torch-rechub examples/ranking/run_census.py (see peer_torch_rechub.py).
PEER_SIZES = dict(
  embed_dim=4, num_experts=8, expert_hidden=(16,), tower_hidden=(8,)
)


def main(argv):
  del argv
  import jax
  import numpy as np

  from mtl.core import train_state, train_step
  from mtl.data import pipeline
  from mtl.shell import build, epochs, inputs, settings

  config = _CONFIG.value
  if _PEER_SIZED.value:
    config.embedding.dim = PEER_SIZES['embed_dim']
    config.model.num_experts = PEER_SIZES['num_experts']
    config.model.expert_hidden = PEER_SIZES['expert_hidden']
    config.towers.hidden = PEER_SIZES['tower_hidden']
  dataset = build.load_dataset(config)
  split = dataset.splits['train']
  spe = pipeline.steps_per_epoch(dataset.num_rows('train'), config.batch_size)
  model, tx, weighting = build.build(config, dataset, spe * config.num_epochs)
  scan_steps = _SCAN_STEPS.value or spe
  step_fn = train_step.make_train_step(
    model, tx, weighting, dataset.tasks, steps_per_epoch=spe
  )
  init_key, data_key = jax.random.split(jax.random.key(config.seed))
  example = pipeline.take_rows(split, np.arange(2))
  fresh = lambda: train_state.init_train_state(  # noqa: E731
    model,
    tx,
    weighting,
    train_step.features_of(example),
    num_tasks=dataset.num_tasks,
    key=init_key,
  )
  num_params = sum(x.size for x in jax.tree.leaves(fresh().params))
  modes = {
    'host': ('host', 1),
    'device': ('device', 1),
    'device_scan': ('device', scan_steps),
  }
  results = {}
  for name, (mode, k) in modes.items():
    config.input_mode, config.steps_per_dispatch = mode, k
    data = inputs.make_input(settings.engine_settings(config), dataset)
    runner = epochs.EpochRunner(step_fn, data, data_key)
    state = fresh()
    rates = []
    for epoch in range(_REPEATS.value + 1):
      perm = runner.permutation(epoch)
      jax.block_until_ready(perm)
      t0 = time.perf_counter()
      for first, n in epochs.plan(spe, runner.k):
        state, m = runner.run(state, perm, first, n)
      jax.block_until_ready(state)
      if epoch:  # Epoch 0 compiles.
        rates.append(spe * config.batch_size / (time.perf_counter() - t0))
    results[name] = {
      'steps_per_dispatch': k,
      'examples_per_s': [round(r) for r in rates],
      'median_examples_per_s': round(statistics.median(rates)),
    }
    print(
      f'{name:12s} steps/dispatch={k:4d}  '
      f'{statistics.median(rates):12,.0f} examples/s  '
      f'({spe / (spe * config.batch_size / statistics.median(rates)):.1f} '
      'steps/s)'
    )
  facts = harness.machine_facts()
  record = {
    'model': config.model_name,
    'model_kwargs': config.model.to_dict(),
    'embed_dim': config.embedding.dim,
    'tower_hidden': list(config.towers.hidden),
    'num_params': int(num_params),
    'batch_size': config.batch_size,
    'steps_per_epoch': spe,
    'modes': results,
    'jax': jax.__version__,
    'backend': jax.default_backend(),
    'devices': jax.local_device_count(),
    'cpu_count': facts['cpus'],
    'machine': facts['machine'],
  }
  harness.write_results('benchmark', record, markdown(record), out=FLAGS.out)


def markdown(record) -> list[str]:
  return [
    f'Training throughput of `{record["model"]}` '
    f'({record["num_params"]:,} parameters, batch {record["batch_size"]}, '
    f'{record["steps_per_epoch"]} steps per epoch), median of the timed '
    'epochs after a compile epoch.',
    '',
    *harness.markdown_table(
      ['mode', 'steps/dispatch', 'examples/s'],
      [
        [name, m['steps_per_dispatch'], f'{m["median_examples_per_s"]:,}']
        for name, m in record['modes'].items()
      ],
      'lrr',
    ),
  ]


if __name__ == '__main__':
  harness.run_main(main)
