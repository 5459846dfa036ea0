"""mtl's hand-written optimisers against evosax's strategies.

  pip install evosax==0.3.2   # not a dependency of mtl (see docs/fusion.md)
  python experiments/search_libraries.py [--search_seeds=10]

The question (docs/fusion.md): do evosax's strategies find results as good
as mtl.search's numpy ES, GA and PSO? Each pair searches the same problem
over the same budget from the same start:

  es   mtl.search.evolution ES   vs  evosax Open_ES (Adam 0.1) and CMA_ES
  ga   mtl.search.genetic GA     vs  evosax SimpleGA (std decaying as ours)
  pso  mtl.search.pso swarm      vs  evosax PSO (its default coefficients)

evosax's GA and PSO start from an evaluated population: the first
generation is sampled as ours (uniform in the bounds) and seeds them.
Candidates are clipped to the same bounds. evosax minimises: scores are
negated. Problems:

- docs/fusion.md's score fusion: experiments/fusion.py's objective
  (GAUC like + XAUC play time) / 2 on validation, on its scratch ensemble
  (the population in --workdirs/scratch, trained if missing), 12 x 10 =
  120 evaluations, sigma 1, theta in [-4, 4] (mtl.search.fusion's
  settings);
- tests/search/test_fusion.py's 5-D shifted sphere (20 x 60) and 2-D shifted
  Rastrigin (30 x 50), without the softmax.

Writes experiments/results/search_libraries.{json,md}.
"""

import pathlib
import sys
import time

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402

_SEARCH_SEEDS = flags.DEFINE_integer('search_seeds', 10, 'Seeds per search.')
harness.define_flags(out='search_libraries', workdirs='fusion')
FLAGS = flags.FLAGS
OBJECTIVES = ('click', 'long_view', 'like', 'play_time')
TRANSFORMS = ('logit', 'logit', 'logit', 'identity')
PAIRS = {
  'es': ('openes', 'cmaes'),
  'ga': ('evosax-ga',),
  'pso': ('evosax-pso',),
}


class Evosax:
  """An evosax strategy behind mtl.search's init / ask / tell (maximising)."""

  def __init__(self, name, dim, popsize, sigma, seed, *, bounds, decay):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from evosax import algorithms as a

    x0 = jnp.zeros(dim)
    self.es = {
      'openes': lambda: a.Open_ES(
        popsize,
        x0,
        optimizer=optax.adam(0.1),
        std_schedule=optax.exponential_decay(sigma, 1, decay),
      ),
      'cmaes': lambda: a.CMA_ES(popsize, x0),
      'evosax-ga': lambda: a.SimpleGA(
        popsize, x0, std_schedule=optax.exponential_decay(sigma, 1, decay)
      ),
      'evosax-pso': lambda: a.PSO(popsize, x0),
    }[name]()
    self.params = self.es.default_params
    if name == 'cmaes':
      self.params = self.params.replace(std_init=jnp.asarray(sigma))
    self.seeded = name in ('evosax-ga', 'evosax-pso')  # Population-based.
    self.n, self.d, self.sigma = popsize, dim, sigma
    self.bounds = None if bounds is None else tuple(map(float, bounds))
    self.key, self.rng = jax.random.key(seed), np.random.default_rng(seed)
    self.inner, self.g = None, 0

  def init(self):
    import jax.numpy as jnp

    if not self.seeded:
      self.inner = self.es.init(self.key, jnp.zeros(self.d), self.params)

  def ask(self):
    import jax
    import numpy as np

    if self.inner is None:  # The population-based start, as ours.
      if self.bounds is not None:
        low, high = self.bounds
        return low + (high - low) * self.rng.random((self.n, self.d))
      return self.sigma * self.rng.standard_normal((self.n, self.d))
    k = jax.random.fold_in(self.key, 2 * self.g)
    x, self.inner = self.es.ask(k, self.inner, self.params)
    x = np.asarray(x, np.float64)
    return x if self.bounds is None else np.clip(x, *self.bounds)

  def tell(self, x, scores):
    import jax
    import numpy as np

    x, f = np.asarray(x, np.float32), -np.asarray(scores, np.float32)
    k = jax.random.fold_in(self.key, 2 * self.g + 1)
    if self.inner is None:
      self.inner = self.es.init(k, x, f, self.params)
    else:
      self.inner, _ = self.es.tell(k, x, f, self.inner, self.params)
    self.g += 1


class Ours:
  """mtl.search's optimiser with its state kept inside."""

  def __init__(self, name, dim, popsize, sigma, seed, *, bounds, decay):
    from mtl.search import evolution, genetic, pso

    if name == 'es':
      self.opt = evolution.EvolutionStrategy(dim, popsize, sigma, seed=seed)
    elif name == 'ga':
      self.opt = genetic.GeneticAlgorithm(
        dim, popsize, sigma, seed, bounds=bounds, decay=decay
      )
    else:
      self.opt = pso.ParticleSwarm(dim, popsize, sigma, seed, bounds=bounds)

  def init(self):
    self.state = self.opt.init()

  def ask(self):
    return self.opt.ask(self.state)

  def tell(self, x, scores):
    self.state = self.opt.tell(self.state, x, scores)


def best_after(name, f, dim, generations, popsize, seed, softmax, **kw):
  """The best score after each evaluation, [generations * popsize]."""
  import numpy as np

  from mtl.search import evolution

  cls = Ours if name in PAIRS else Evosax
  opt = cls(name, dim, popsize, kw.pop('sigma'), seed, **kw)
  opt.init()
  scores = []
  for _ in range(generations):
    theta = opt.ask()
    x = evolution.weights_of(theta) if softmax else theta
    s = np.array([f(v) for v in x])
    opt.tell(theta, s)
    scores.append(s)
  return np.maximum.accumulate(np.concatenate(scores))


def fusion_objective(root):
  import numpy as np

  from configs import kuairand
  from mtl.core import ranking_metrics as rm
  from mtl.search import fusion
  from mtl.shell import ensemble

  c = kuairand.get_config('mmoe,plain')
  c.progress_bar = False
  c.population.seeds = (0, 1, 2, 3, 4)
  harness.run(c, root / 'scratch')
  group = ensemble.load(c, root / 'scratch')
  names = [t.name for t in group.tasks]
  preds = ensemble.predict(group, 'validation').mean(0)
  preds = preds[[names.index(o) for o in OBJECTIVES]]
  labels = group.dataset.splits['validation']['labels']
  users = group.users('validation')
  like, play = names.index('like'), names.index('play_time')
  seen = {}

  def objective(w):
    key = tuple(np.round(w, 12))
    if key not in seen:
      s = fusion.fuse(preds, w, transforms=TRANSFORMS)
      seen[key] = float(
        (rm.gauc(labels[like], s, users) + rm.xauc(labels[play], s, users)) / 2
      )
    return seen[key]

  return objective, fusion.search('grid', objective, 4, budget=120)


def problems(root):
  import numpy as np

  shift = np.array([1.0, -2.0, 0.5, 3.0, -1.0])

  def rastrigin(x):
    z = x - np.array([0.5, -0.3])
    return -float(20 + np.sum(z**2 - 10 * np.cos(2 * np.pi * z)))

  objective, grid = fusion_objective(root)
  fusion = dict(sigma=1.0, bounds=(-4.0, 4.0), decay=0.95)
  return grid, {
    'fusion': (objective, 4, 10, 12, True, fusion),
    'sphere5': (
      lambda x: -float(np.sum((x - shift) ** 2)),
      5,
      60,
      20,
      False,
      dict(sigma=0.5, bounds=(-5.0, 5.0), decay=0.97),
    ),
    'rastrigin2': (
      rastrigin,
      2,
      50,
      30,
      False,
      dict(sigma=1.0, bounds=(-5.12, 5.12), decay=0.95),
    ),
  }


def main(argv):
  del argv
  import numpy as np

  grid, todo = problems(pathlib.Path(FLAGS.workdirs))
  record = {'fusion_grid_120': grid['best_score'], 'problems': {}}
  for problem, (f, dim, gens, pop, softmax, kw) in todo.items():
    rows = {}
    for ours, theirs in PAIRS.items():
      for name in (ours, *theirs):
        t = time.time()
        runs = [
          best_after(name, f, dim, gens, pop, s, softmax, **dict(kw))
          for s in range(_SEARCH_SEEDS.value)
        ]
        best = [float(r[-1]) for r in runs]
        rows[name] = {
          'best': best,
          'mean': float(np.mean(best)),
          'worst': float(np.min(best)),
          'best_after_mean': np.mean(runs, 0).tolist(),
          'seconds': time.time() - t,
        }
        print(problem, name, np.round(best, 4), flush=True)
    record['problems'][problem] = rows
  harness.write_results('search_libraries', record, markdown(record))


def markdown(r):
  lines = [
    '# Hand-written optimisers vs evosax 0.3.2',
    '',
    'Best score found per seed (higher is better); fusion is docs/fusion.md'
    "'s objective on validation (grid of 120: "
    f'{r["fusion_grid_120"]:.4f}), the others minus the function.',
    '',
    '| problem | optimiser | mean best | worst seed | seconds |',
    '|---|---|---:|---:|---:|',
  ]
  for problem, rows in r['problems'].items():
    for name, x in rows.items():
      lines.append(
        f'| {problem} | {name} | {x["mean"]:.5f} | {x["worst"]:.5f} | '
        f'{x["seconds"]:.0f} |'
      )
  return lines


if __name__ == '__main__':
  harness.run_main(main)
