"""One command that checks a machine's accelerator: speed and numbers.

  python experiments/accelerator_check.py [--smoke] [--data_dir=DIR]

Writes experiments/results/accelerator_check.{json,md} (--smoke:
accelerator_check_smoke.*, or --out) with:

  device       JAX's backend, the first device's kind, the device count;
  throughput   census MMoE training examples/s at batch 1024 and 8192,
               float32, the compiled program as mtl-train runs it (the
               split on the device, steps_per_dispatch steps scanned per
               dispatch), median of --repeats timed dispatches after a
               compiling one; bfloat16 'n/a' (mtl has no config.precision);
  population   K = 1, 4 and 16 members in one program (batch 1024 each)
               against K sequential runs, as experiments/population_speed.py
               measures it: a population's examples/s over the single run's;
  sparse       lazy Adam's update of a [rows, 16] table, 1,024 ids a step,
               1e6 and 1e7 rows (experiments/sparse_step.py's timing: one
               step per dispatch, and --sparse_steps steps in one lax.scan);
  auc          a 1-epoch census MMoE run (configs/census.py:mmoe, seed 0)
               whose test AUCs must be within TOLERANCE of this repository's
               CPU reference (REFERENCE), else the check fails (exit 1).

--smoke runs each part at tiny sizes in seconds (configs/smoke.py's census
MMoE at batch 1024, K = 1 and 2, tables of 1e3 and 1e4 rows,
SMOKE_REFERENCE). The
census data comes from $MTL_DATA_DIR (prepared in TFDS's data directory,
or --data_dir). Target: under 8 minutes on one GPU.
"""

import pathlib
import sys
import tempfile
import time

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ and experiments/

from experiments import harness  # noqa: E402
from experiments.harness import timing  # noqa: E402

_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny sizes: seconds.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, "Census' TFDS directory.")
_REPEATS = flags.DEFINE_integer('timed_calls', 5, 'Timed dispatches a part.')
_SPARSE_STEPS = flags.DEFINE_integer('sparse_steps', 16, 'Scanned steps.')
harness.define_flags(out='accelerator_check')
FLAGS = flags.FLAGS

# Test AUCs of one census MMoE epoch, seed 0, on CPU (jax 0.10.2, XLA's
# default optimisation level, 2 cores), and how far another backend's
# rounding may move them: about 3 standard deviations of the same run over
# seeds 0-2 (full: income 0.93283, 0.93361, 0.93423, sd 0.0007; marital
# 0.99331, 0.99303, 0.99367, sd 0.0003. Smoke: income 0.9066, 0.8685,
# 0.8931, sd 0.019; marital 0.9807, 0.9628, 0.9844, sd 0.012).
REFERENCE = {'test/auc/income': 0.93283, 'test/auc/marital': 0.99331}
TOLERANCE = 0.002
SMOKE_REFERENCE = {'test/auc/income': 0.90659, 'test/auc/marital': 0.98075}
SMOKE_TOLERANCE = 0.06
BATCH_SIZES = (1024, 8192)
POPULATION = (1, 4, 16)
SPARSE_ROWS = (10**6, 10**7)
SMOKE = dict(population=(1, 2), sparse_rows=(10**3, 10**4), repeats=2)
SMOKE_DISPATCH = 4  # Steps a timed dispatch at smoke sizes.


def census_config(smoke: bool, data_dir=None):
  """configs/census.py:mmoe, or the smoke config's census MMoE (epoch 1)."""
  from configs import smoke as smoke_configs

  if smoke:
    config = smoke_configs.get_config('mmoe,census')
    config.update(dict(batch_size=1024, eval_batch_size=16384))
    # Half of census' 194 steps at batch 1024: one compiled scan length.
    config.steps_per_dispatch = 97
    config.diagnostics_every_steps = 0
  else:
    config = harness.census_config('mmoe')
  config.num_epochs = 1
  config.progress_bar = False
  config.checkpoint.async_save = False
  if data_dir:
    config.dataset.data_dir = str(data_dir)
  return config


def device_facts() -> dict:
  import jax

  device = jax.devices()[0]
  return {
    'backend': jax.default_backend(),
    'kind': device.device_kind,
    'count': jax.device_count(),
    'jax': jax.__version__,
  }


def sparse_rows(rows, *, steps: int, repeats: int) -> list[dict]:
  """lazy Adam on each table size, experiments/sparse_step.py's Timed."""
  from experiments import sparse_step

  out = []
  for n in rows:
    data = sparse_step.data_for(n, steps, 1024, 16)
    timed = sparse_step.Timed('lazy_adam', n, 16, data)
    for _ in range(repeats):
      for mode in timed.fns:
        timed.call(mode)
    out.append(timed.result())
    timed.close()
  return out


def auc_check(config, reference: dict, tolerance: float) -> dict:
  """One training run; its test AUCs against `reference`."""
  from mtl.shell import trainer

  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    results = trainer.train(config, pathlib.Path(workdir) / 'run')
  rows = {
    key: {
      'value': results['test'][key],
      'reference': ref,
      'difference': results['test'][key] - ref,
    }
    for key, ref in reference.items()
  }
  return {
    'aucs': rows,
    'tolerance': tolerance,
    'ok': all(abs(r['difference']) <= tolerance for r in rows.values()),
    'wall_time_s': time.perf_counter() - t0,
  }


def check(*, smoke: bool, data_dir=None, repeats: int = 5, sparse_steps=16):
  """Every part; the record that accelerator_check.json holds."""
  from mtl.shell import build

  t0 = time.perf_counter()
  sizes = SMOKE if smoke else {}
  repeats = sizes.get('repeats', repeats)
  record = {'smoke': smoke, 'device': device_facts(), 'part_s': {}}

  def timed(part, fn, *args, **kwargs):
    start = time.perf_counter()
    record[part] = fn(*args, **kwargs)
    record['part_s'][part] = time.perf_counter() - start
    print(f'{part}: {record["part_s"][part]:.0f} s', flush=True)

  config = census_config(smoke, data_dir)
  dataset = build.load_dataset(config)
  if smoke:
    config.steps_per_dispatch = SMOKE_DISPATCH

  def throughput():
    rows = []
    for bs in BATCH_SIZES:
      config.batch_size = bs
      r = timing.examples_per_s(config, dataset, members=1, repeats=repeats)
      rows.append({**r, 'dtype': 'float32'})
      # bfloat16 needs a precision setting, which mtl's config lacks.
      rows.append({'batch_size': bs, 'dtype': 'bfloat16', 'n/a': True})
    return rows

  def members():
    config.batch_size = 1024
    single = [r for r in record['throughput'] if r.get('batch_size') == 1024]
    rows = [
      single[0]  # K = 1: the single run's program, timed above.
      if k == 1
      else timing.examples_per_s(config, dataset, members=k, repeats=repeats)
      for k in sizes.get('population', POPULATION)
    ]
    return [
      {**r, 'x_sequential': r['examples_per_s'] / rows[0]['examples_per_s']}
      for r in rows
    ]

  timed('throughput', throughput)
  timed('population', members)
  steps = 4 if smoke else sparse_steps
  rows = sizes.get('sparse_rows', SPARSE_ROWS)
  timed('sparse', sparse_rows, rows, steps=steps, repeats=repeats)
  reference, tolerance = (
    (SMOKE_REFERENCE, SMOKE_TOLERANCE) if smoke else (REFERENCE, TOLERANCE)
  )
  config = census_config(smoke, data_dir)
  timed('auc', auc_check, config, reference, tolerance)
  record['wall_time_s'] = time.perf_counter() - t0
  return record


def _table(rows, columns) -> list[str]:
  """Markdown lines of `rows`; columns: (header, align, format of a row)."""
  return harness.markdown_table(
    [c[0] for c in columns],
    [[c[2](r) for c in columns] for r in rows],
    ''.join(c[1] for c in columns),
  )


def _ms(key):
  return lambda r: 'n/a' if r.get('n/a') else f'{r[key]:.3f}'


def markdown(record) -> list[str]:
  d, auc = record['device'], record['auc']
  verdict = 'within' if auc['ok'] else '**NOT within**'
  per_s = lambda r: 'n/a' if r.get('n/a') else f'{r["examples_per_s"]:,.0f}'  # noqa: E731
  return [
    f'Accelerator check{" (smoke sizes)" if record["smoke"] else ""}: '
    f'{d["kind"]} ({d["backend"]}, {d["count"]} device(s), jax {d["jax"]}),'
    f' {record["wall_time_s"]:.0f} s in all.',
    '',
    'Census MMoE training, the scanned program (median of the timed '
    'dispatches):',
    '',
    *_table(
      record['throughput'],
      [
        ('batch', 'r', lambda r: r['batch_size']),
        ('dtype', 'l', lambda r: r['dtype']),
        ('steps/dispatch', 'r', lambda r: r.get('steps_per_dispatch', 'n/a')),
        ('ms/step', 'r', _ms('ms_per_step')),
        ('examples/s', 'r', per_s),
      ],
    ),
    '',
    'A population of K members (batch 1024 each) against K sequential runs:',
    '',
    *_table(
      record['population'],
      [
        ('members K', 'r', lambda r: r['members']),
        ('ms/step (all K)', 'r', _ms('ms_per_step')),
        ('examples/s', 'r', per_s),
        ('x K sequential runs', 'r', lambda r: f'{r["x_sequential"]:.2f}'),
      ],
    ),
    '',
    "Lazy Adam's update of a [rows, 16] table, 1,024 ids a step, ms/step:",
    '',
    *_table(
      record['sparse'],
      [
        ('rows', 'r', lambda r: f'{r["rows"]:,d}'),
        ('one step a dispatch', 'r', _ms('ms_dispatch_median')),
        ('scanned', 'r', _ms('ms_scan_median')),
      ],
    ),
    '',
    f'One census MMoE epoch, test AUCs {verdict} {auc["tolerance"]:g} of the '
    f'CPU reference ({auc["wall_time_s"]:.0f} s):',
    '',
    *_table(
      auc['aucs'].items(),
      [
        ('metric', 'l', lambda kr: kr[0]),
        ('this machine', 'r', lambda kr: f'{kr[1]["value"]:.5f}'),
        ('CPU reference', 'r', lambda kr: f'{kr[1]["reference"]:.5f}'),
        ('difference', 'r', lambda kr: f'{kr[1]["difference"]:+.5f}'),
      ],
    ),
  ]


def main(argv):
  del argv
  record = check(
    smoke=_SMOKE.value,
    data_dir=_DATA_DIR.value,
    repeats=_REPEATS.value,
    sparse_steps=_SPARSE_STEPS.value,
  )
  out = FLAGS.out
  if _SMOKE.value and FLAGS['out'].using_default_value:
    out = str(harness.results_stem('accelerator_check_smoke'))
  harness.write_results('accelerator_check', record, markdown(record), out=out)
  if not record['auc']['ok']:
    sys.exit(1)


if __name__ == '__main__':
  harness.run_main(main)
