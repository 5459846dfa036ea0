"""Searching the task weights on census-income: grid vs evolution strategy.

  python experiments/weight_search.py [--grid=19] [--popsize=4]
      [--generations=3]

Census MMoE (configs/census.py:mmoe, group 1, paper protocol), model seed 0
for every candidate, so candidates differ by their weights alone. The
objective is the mean of the two tasks' VALIDATION AUCs (income and never
married); the test split is only reported.

- Grid: w = 2 (a, 1 - a) for --grid values of a evenly in (0, 1), one
  population run; or, with --grid_workdir, a finished population of fixed
  weight vectors of the same config (experiments/pareto.py's 11 vectors,
  a in 0.02, 0.1, ..., 0.9, 0.98, model seed 0; its config.json must equal
  this script's but for the population's members, and --epochs must match).
- Evolution: mtl.search.evolution's (mu/mu_w, lambda)-ES over theta, w = 2
  softmax(theta), from equal weights, --popsize candidates per generation
  (each generation one population run), --generations generations;
  --search=ga or pso runs mtl.search.genetic's GA or mtl.search.pso's
  swarm through the same ask/tell loop instead (workdirs <search>_<g>).
- The Pareto set of every evaluated vector on (income, marital) validation
  AUC, its hypervolume (mtl.search.pareto) for the grid and for grid + ES,
  and a plot.

Populations live in --workdirs/{grid,es_<g>}; a finished one of the same
config is reused, one of another config moved aside and re-run
(experiments/harness; --force re-runs all). Writes
experiments/results/weight_search.{json,md,png} (or --out).
"""

import pathlib
import sys

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402

KEYS = ('val/auc/income', 'val/auc/marital')
TEST_KEYS = ('test/auc/income', 'test/auc/marital')

_GRID = flags.DEFINE_integer('grid', 19, 'Grid points a in (0, 1).')
_GRID_WORKDIR = flags.DEFINE_string(
  'grid_workdir',
  None,
  'A finished population of fixed weight vectors of the same config '
  '(e.g. workdirs/pareto/weights) to use as the grid instead.',
)
_POPSIZE = flags.DEFINE_integer('popsize', 4, 'ES candidates per generation.')
_GENERATIONS = flags.DEFINE_integer('generations', 3, 'ES generations.')
_SIGMA = flags.DEFINE_float('sigma', 0.5, 'ES initial step size.')
_SEARCH = flags.DEFINE_enum(
  'search',
  'es',
  ['es', 'ga', 'pso'],
  'The searcher, one population run per generation: the evolution '
  'strategy, mtl.search.genetic or mtl.search.pso (same ask/tell).',
)
_EPOCHS = flags.DEFINE_integer('epochs', 0, "0: the config's.")
harness.define_flags(out='weight_search', workdirs='weight_search')
FLAGS = flags.FLAGS


def base_config(epochs):
  """Census MMoE, model seed 0: the population's members are the weights."""
  config = harness.census_config('mmoe')
  config.progress_bar = False
  if epochs:
    config.num_epochs = epochs
  return config


def rows_of(members):
  return [
    {
      'weights': m['task_weights'],
      'val': [m['validation'][k] for k in KEYS],
      'test': [m['test'][k] for k in TEST_KEYS],
      'score': sum(m['validation'][k] for k in KEYS) / len(KEYS),
    }
    for m in members
  ]


def evaluate(weights, workdir, epochs):
  """Trains (or reuses) one population, a member per weight vector."""
  config = base_config(epochs)
  config.population.task_weights = tuple(tuple(map(float, w)) for w in weights)
  config.population.seeds = (0,)
  result = harness.run(config, workdir, force=FLAGS.force)
  return rows_of(result['members'])


def main(argv):
  del argv
  import numpy as np

  from mtl.search import evolution, genetic, pareto, pso

  root = pathlib.Path(FLAGS.workdirs)
  epochs = _EPOCHS.value
  if _GRID_WORKDIR.value:
    # Another script's population: the same config but for its members,
    # which must all have model seed 0.
    result = harness.reuse(
      _GRID_WORKDIR.value,
      base_config(epochs),
      ignore=(*harness.IGNORED, 'population'),
    )
    if {m['seed'] for m in result['members']} != {0}:
      raise SystemExit(f'{_GRID_WORKDIR.value}: members not all of seed 0')
    grid = rows_of(result['members'])
  else:
    a = np.arange(1, _GRID.value + 1) / (_GRID.value + 1)
    grid = evaluate([(2 * x, 2 * (1 - x)) for x in a], root / 'grid', epochs)

  searcher = {
    'es': evolution.EvolutionStrategy,
    'ga': genetic.GeneticAlgorithm,
    'pso': pso.ParticleSwarm,
  }[_SEARCH.value]
  es = searcher(2, _POPSIZE.value, _SIGMA.value, seed=0)
  name = 'es' if _SEARCH.value == 'es' else _SEARCH.value
  state = es.init()
  searched = []
  for g in range(_GENERATIONS.value):
    theta = es.ask(state)
    rows = evaluate(evolution.weights_of(theta), root / f'{name}_{g}', epochs)
    for r in rows:
      r['generation'] = g
    searched += rows
    state = es.tell(state, theta, [r['score'] for r in rows])
    # The ES's mean, the GA's and the swarm's best so far; the step size
    # of the ES and the GA (the swarm has none).
    step = getattr(state, 'sigma', None)
    print(
      f'generation {g}: best {max(r["score"] for r in rows):.5f}, '
      f'centre weights {evolution.weights_of(state.mean).round(3).tolist()}'
      + ('' if step is None else f', sigma {step:.3f}'),
      flush=True,
    )

  best_grid = max(grid, key=lambda r: r['score'])
  best_es = max(searched, key=lambda r: r['score'])
  everything = np.array([r['val'] for r in grid + searched])
  reference = everything.min(0) - 1e-4
  record = {
    'objective': 'mean validation AUC of income and marital',
    'search': _SEARCH.value,
    'grid_evaluations': len(grid),
    'es_evaluations': len(searched),
    'best_grid': best_grid,
    'best_es': best_es,
    'es_at_least_as_good': best_es['score'] >= best_grid['score'],
    'hypervolume_grid': pareto.hypervolume_2d(
      [r['val'] for r in grid], reference
    ),
    'hypervolume_grid_and_es': pareto.hypervolume_2d(everything, reference),
    'reference': reference.tolist(),
    'grid': grid,
    'es': searched,
  }
  front = pareto.non_dominated(everything)
  record['pareto_set'] = [
    r for r, on in zip(grid + searched, front, strict=True) if on
  ]
  harness.write_results(
    'weight_search',
    record,
    markdown(record),
    out=FLAGS.out,
    figures=plot(record),
    dpi=120,
  )


def markdown(r) -> str:
  searcher = {
    'es': 'evolution strategy',
    'ga': 'genetic algorithm',
    'pso': 'particle swarm',
  }[r.get('search', 'es')]

  def row(name, x, n):
    w = ', '.join(f'{v:.3f}' for v in x['weights'])
    return (
      f'| {name} | {n} | ({w}) | {x["score"]:.5f} | {x["val"][0]:.4f} | '
      f'{x["val"][1]:.4f} | {x["test"][0]:.4f} | {x["test"][1]:.4f} |'
    )

  return (
    '\n'.join(
      [
        'Census MMoE, task weights searched on the mean validation AUC of '
        'the two tasks (model seed 0). `python experiments/weight_search.py`.',
        '',
        '| search | evaluations | best weights (income, marital) | objective '
        '| val income | val marital | test income | test marital |',
        '|---|---:|---|---:|---:|---:|---:|---:|',
        row('grid', r['best_grid'], r['grid_evaluations']),
        row(searcher, r['best_es'], r['es_evaluations']),
        '',
        f'{searcher.capitalize()} at least as good as the grid: '
        f'{r["es_at_least_as_good"]}. '
        f'Hypervolume above {[round(x, 4) for x in r["reference"]]}: grid '
        f'{r["hypervolume_grid"]:.3e}, grid + evolution '
        f'{r["hypervolume_grid_and_es"]:.3e}; Pareto set: '
        f'{len(r["pareto_set"])} of '
        f'{r["grid_evaluations"] + r["es_evaluations"]} vectors.',
      ]
    )
    + '\n'
  )


def plot(r):
  import numpy as np

  plt = harness.pyplot()
  fig, ax = plt.subplots(figsize=(7, 5))
  g = np.array([x['val'] for x in r['grid']])
  ax.scatter(g[:, 0], g[:, 1], c='0.6', s=25, label='grid')
  for gen in sorted({x['generation'] for x in r['es']}):
    e = np.array([x['val'] for x in r['es'] if x['generation'] == gen])
    ax.scatter(e[:, 0], e[:, 1], s=35, marker='^', label=f'ES generation {gen}')
  f = np.array([x['val'] for x in r['pareto_set']])
  order = np.argsort(f[:, 0])
  ax.plot(f[order, 0], f[order, 1], 'k-', lw=1, label='Pareto front')
  ax.set_xlabel('validation AUC, income')
  ax.set_ylabel('validation AUC, never married')
  ax.set_title('Census MMoE: task-weight search')
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


if __name__ == '__main__':
  harness.run_main(main)
