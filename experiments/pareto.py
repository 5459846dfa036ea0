"""The Pareto front of fixed task weights on census-income, and where each
balancing method lands.

  python experiments/pareto.py [--seeds=1] [--epochs=0]

1. Fixed weights: one population of census MMoE (configs/census.py:mmoe,
   group 1, paper protocol) whose members are the weight vectors
   (w_income, w_marital) = 2 (a, 1 - a), a in --fractions, each with
   --seeds seeds (validation AUCs averaged over seeds).
2. Balancing methods: every method of --methods at its default
   hyper-parameters, the same seeds (one population per method, through
   mtl.search.sweep).
3. The non-dominated set of the weight vectors on validation (income,
   marital) AUC, its hypervolume above the worst point, and a plot of the
   front with the point each method reached.

Runs live in --workdirs ({weights,methods/<cell>}); a finished population of
the same config is reused, one of another config moved aside and re-run
(experiments/harness; --force re-runs all). Writes
experiments/results/pareto.{json,md,png} (or --out).
"""

import pathlib
import sys

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402
from experiments.harness import stats  # noqa: E402

METHODS = (
  'equal,uncertainty,gradnorm,dwa,rlw,pcgrad,mgda,cagrad,imtl_g,nash_mtl'
).split(',')
KEYS = ('val/auc/income', 'val/auc/marital')

_FRACTIONS = flags.DEFINE_list(
  'fractions',
  '0.02,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.98'.split(','),
  'Income fractions a of the fixed weights 2 (a, 1 - a).',
)
_METHODS = flags.DEFINE_list('methods', METHODS, 'Balancing methods.')
_EPOCHS = flags.DEFINE_integer('epochs', 0, "0: the config's.")
harness.define_flags(out='pareto', workdirs='pareto', seeds=1)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import numpy as np

  from mtl.search import pareto
  from mtl.search import sweep as sweep_lib

  root = pathlib.Path(FLAGS.workdirs)
  fractions = harness.floats(_FRACTIONS.value)
  seeds = list(range(FLAGS.seeds))
  overrides = {'progress_bar': False}
  if _EPOCHS.value:
    overrides['num_epochs'] = _EPOCHS.value

  config = harness.census_config('mmoe')
  for k, v in overrides.items():
    config[k] = v
  config.population.task_weights = tuple(
    (2 * a, 2 * (1 - a)) for a in fractions for _ in seeds
  )
  config.population.seeds = tuple(s for _ in fractions for s in seeds)
  members = harness.run(config, root / 'weights', force=FLAGS.force)['members']

  def averaged(ms, field):
    return [stats.mean(m[field][k] for m in ms) for k in keys_of(field)]

  def keys_of(field):
    return (
      KEYS
      if field == 'validation'
      else tuple(k.replace('val/', 'test/') for k in KEYS)
    )

  weight_rows = []
  for a in fractions:
    ms = [m for m in members if abs(m['task_weights'][0] - 2 * a) < 1e-9]
    weight_rows.append(
      {
        'fraction_income': a,
        'weights': ms[0]['task_weights'],
        'validation': averaged(ms, 'validation'),
        'test': averaged(ms, 'test'),
      }
    )

  # One population per method (its members the seeds), as mtl-sweep lays
  # them out; the harness reuses only a finished cell of the same config.
  sweep = {
    'name': 'methods',
    'configs': [harness.census_config_path('mmoe')],
    'grid': {'weighting_name': _METHODS.value},
    'seeds': seeds,
    'overrides': overrides,
  }
  method_rows = []
  for cell in sweep_lib.cells(sweep):
    ms = harness.run(
      sweep_lib.cell_config(sweep, cell, REPO),
      root / 'methods' / cell['name'],
      force=FLAGS.force,
    )['members']
    method_rows.append(
      {
        'method': cell['values']['weighting_name'],
        'validation': averaged(ms, 'validation'),
        'test': averaged(ms, 'test'),
      }
    )
  sweep_lib.summarize(sweep, root / 'methods')

  val = np.array([r['validation'] for r in weight_rows])
  front = pareto.non_dominated(val)
  everything = np.concatenate([val, [r['validation'] for r in method_rows]])
  reference = everything.min(0) - 1e-4
  hv = pareto.hypervolume_2d(val, reference)
  for r, on in zip(weight_rows, front, strict=True):
    r['pareto'] = bool(on)
  for r in method_rows:
    r['dominated_by_fixed'] = bool(
      ((val >= r['validation']).all(1) & (val > r['validation']).any(1)).any()
    )
  record = {
    'seeds': seeds,
    'reference': reference.tolist(),
    'hypervolume_fixed': hv,
    'weights': weight_rows,
    'methods': method_rows,
  }
  harness.write_results(
    'pareto',
    record,
    markdown(record),
    out=FLAGS.out,
    figures=plot(record),
    dpi=120,
  )


def markdown(record) -> str:
  lines = [
    'Census MMoE (group 1, paper protocol): validation (test) AUC of fixed '
    'weight vectors 2(a, 1-a) and of each balancing method, seeds '
    f'{record["seeds"]}. `python experiments/pareto.py`. Hypervolume of the '
    f'fixed-weight front above {[round(x, 4) for x in record["reference"]]}: '
    f'{record["hypervolume_fixed"]:.3e}.',
    '',
    '| run | val income | val marital | test income | test marital | '
    'Pareto / dominated |',
    '|---|---:|---:|---:|---:|---|',
  ]
  for r in record['weights']:
    v, t = r['validation'], r['test']
    lines.append(
      f'| fixed a={r["fraction_income"]:g} | {v[0]:.4f} | {v[1]:.4f} | '
      f'{t[0]:.4f} | {t[1]:.4f} | {"front" if r["pareto"] else ""} |'
    )
  for r in record['methods']:
    v, t = r['validation'], r['test']
    lines.append(
      f'| `{r["method"]}` | {v[0]:.4f} | {v[1]:.4f} | {t[0]:.4f} | '
      f'{t[1]:.4f} | '
      f'{"dominated by a fixed vector" if r["dominated_by_fixed"] else ""} |'
    )
  return '\n'.join(lines) + '\n'


def plot(record):
  import numpy as np

  plt = harness.pyplot()
  fig, ax = plt.subplots(figsize=(7, 5))
  val = np.array([r['validation'] for r in record['weights']])
  on = np.array([r['pareto'] for r in record['weights']])
  ax.scatter(val[:, 0], val[:, 1], c='0.6', s=25, label='fixed weights')
  order = np.argsort(val[on, 0])
  ax.plot(
    val[on][order, 0], val[on][order, 1], 'k-o', ms=5, label='Pareto front'
  )
  for r, (x, y) in zip(record['weights'], val, strict=True):
    ax.annotate(
      f'a={r["fraction_income"]:g}',
      (x, y),
      fontsize=7,
      color='0.4',
      xytext=(3, -8),
      textcoords='offset points',
    )
  markers = 'sD^v<>pP*Xh'
  for i, r in enumerate(record['methods']):
    x, y = r['validation']
    ax.scatter(x, y, marker=markers[i % len(markers)], s=60, label=r['method'])
  ax.set_xlabel('validation AUC, income')
  ax.set_ylabel('validation AUC, never married')
  ax.set_title('Census MMoE: fixed-weight front and balancing methods')
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  return fig


if __name__ == '__main__':
  harness.run_main(main)
