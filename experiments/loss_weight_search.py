"""Per-task loss weights chosen on validation, for any of the real logs.

  MTL_DATA_DIR=../shared/data python experiments/loss_weight_search.py \
      [--dataset=kuairand] [--parts=counts+ftrl+per_task+rare+l2+long] \
      [--popsize=6] [--generations=4] [--jobs=2]

The weights are the `fixed` weighting's (w_t multiplies task t's loss) on
top of the configuration `--parts` of `--dataset` (experiments/harness/
real_logs.py; default: the dataset's config default without 'weights').
They are searched by mtl.search.evolution's evolution strategy over logits,
w = T softmax(theta), from equal weights (theta = 0, evaluated first as the
reference), --popsize single runs per generation, --generations
generations. Every candidate trains with model seed --seed, so candidates
differ by their weights alone, and is scored on VALIDATION only, by the
score experiments/real_data.py chooses configurations with (mean over tasks
of AUC, or R^2 of a regression); test metrics are recorded, never used.

The best vector is printed as the line a config file takes (configs/
kuairand.py TASK_WEIGHTS, its 'weights' part); experiments/real_data.py then
judges '<parts>+weights' against the other candidates over 5 seeds, on
validation, like every other part. Writes experiments/results/
loss_weight_search_<dataset>.{json,md}; runs live in
--workdirs/<dataset>/g<generation>/c<candidate>.
"""

import pathlib
import sys

import numpy as np
from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402
from experiments.harness import real_logs, runner  # noqa: E402

_DATASET = flags.DEFINE_enum(
  'dataset', 'kuairand', list(real_logs.DATASETS), 'The log (real_logs).'
)
_PARTS = flags.DEFINE_string(
  'parts', None, "configs/common.py PARTS; default: the config's default."
)
_POPSIZE = flags.DEFINE_integer('popsize', 6, 'Candidates per generation.')
_GENERATIONS = flags.DEFINE_integer('generations', 4, 'ES generations.')
_SIGMA = flags.DEFINE_float('sigma', 0.5, 'ES initial step size (logits).')
_SEED = flags.DEFINE_integer('seed', 0, 'Model seed of every candidate.')
_JOBS = flags.DEFINE_integer('jobs', 2, 'Runs trained at once.')
_DATA_DIR = flags.DEFINE_string('data_dir', 'workdirs/tfds', 'TFDS cache.')
harness.define_flags(out='', workdirs='loss_weight_search')
FLAGS = flags.FLAGS


def default_parts(dataset: str) -> str:
  from configs import census, kuairand, movielens_table

  module = {'kuairand': kuairand, 'movielens': movielens_table}.get(
    dataset.split('_')[0], census
  )
  parts = getattr(module, 'DEFAULT_PARTS', 'plain').split('+')
  return '+'.join(p for p in parts if p != 'weights')


def config_with(parts: str, weights):
  config = real_logs.config_of(
    _DATASET.value,
    parts,
    _SEED.value,
    data_dir=_DATA_DIR.value,
    workdirs=FLAGS.workdirs,
  )
  config.weighting_name = 'fixed'
  config.weighting.fixed.weights = tuple(round(float(w), 4) for w in weights)
  return config


def main(argv):
  del argv
  from mtl.search import evolution

  dataset = _DATASET.value
  parts = _PARTS.value or default_parts(dataset)
  root = pathlib.Path(FLAGS.workdirs) / dataset
  data = real_logs.load(config_with(parts, [1.0]))
  tasks = [t for t in data.tasks if t.train]
  if len(tasks) != len(data.tasks):
    raise SystemExit(f'{dataset}: a task is not trained; weights need all')
  prior = real_logs.prior_mse(data)
  test_prior = real_logs.prior_mse(data, 'test')
  names = [t.name for t in tasks]

  def evaluate(thetas, folder):
    weights = evolution.weights_of(np.asarray(thetas))
    jobs = [
      (config_with(parts, w), root / folder / f'c{i}')
      for i, w in enumerate(weights)
    ]
    results = runner.run_all(jobs, processes=_JOBS.value, force=FLAGS.force)
    return [
      dict(
        weights=[round(float(x), 4) for x in w],
        score=real_logs.score(r, tasks, prior),
        test=real_logs.score(r, tasks, test_prior, 'test'),
        validation=r['validation'],
      )
      for w, r in zip(weights, results, strict=True)
    ]

  equal = evaluate(np.zeros((1, len(tasks))), 'equal')[0]
  print(f'equal weights: validation score {equal["score"]:.5f}', flush=True)
  es = evolution.EvolutionStrategy(
    len(tasks), _POPSIZE.value, _SIGMA.value, seed=0
  )
  state = es.init()
  searched = []
  for g in range(_GENERATIONS.value):
    theta = es.ask(state)
    rows = evaluate(theta, f'g{g}')
    for r in rows:
      r['generation'] = g
    searched += rows
    state = es.tell(state, theta, [r['score'] for r in rows])
    top = max(rows, key=lambda r: r['score'])
    print(
      f'generation {g}: best {top["score"]:.5f} at {top["weights"]}, '
      f'sigma {state.sigma:.3f}',
      flush=True,
    )
  best = max([equal, *searched], key=lambda r: r['score'])
  record = dict(
    dataset=dataset,
    parts=parts,
    tasks=names,
    seed=_SEED.value,
    objective='mean over tasks of validation AUC, or R^2 of a regression',
    equal=equal,
    best=best,
    gain=best['score'] - equal['score'],
    searched=searched,
  )
  line = f'TASK_WEIGHTS = {tuple(best["weights"])}'
  print(f'best: {best["score"]:.5f} (equal {equal["score"]:.5f}); {line}')
  harness.write_results(
    f'loss_weight_search_{dataset}',
    record,
    markdown(record, line),
    out=FLAGS.out,
  )


def markdown(r, line) -> str:
  header = ['candidate', *r['tasks'], 'validation score', 'test score']
  rows = []
  for name, x in (('equal', r['equal']), ('best', r['best'])):
    rows.append(
      [name, *(f'{w:.3f}' for w in x['weights']), f'{x["score"]:.5f}']
      + [f'{x["test"]:.5f}']
    )
  lines = [
    f'Per-task loss weights of `{r["dataset"]}` (`mmoe,{r["parts"]}`, '
    f'model seed {r["seed"]}) searched on validation by the evolution '
    f'strategy: {len(r["searched"])} candidates. Objective: {r["objective"]}'
    '. The test score is recorded, never used. '
    '`python experiments/loss_weight_search.py`.',
    '',
    *harness.markdown_table(header, rows),
    '',
    f'Validation gain over equal weights: {r["gain"]:+.5f}. The config line: '
    f'`{line}`.',
  ]
  return '\n'.join(lines) + '\n'


if __name__ == '__main__':
  harness.run_main(main)
