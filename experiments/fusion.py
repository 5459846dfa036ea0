"""Score fusion and model fusion on the KuaiRand feedback slice.

  python experiments/fusion.py [--budget=120] [--search_seeds=5]

KuaiRand MMoE (configs/kuairand.py; the slice is BIASED: only impressions
with a like or a hate, so rates are far above a feed's). Three populations
of 5 members (seeds 0-4), each selecting its best epoch on validation
click AUC:
  scratch    independent initialisations;
  bagged     the same, each member on its own Poisson(1) bootstrap
             (population.bagging);
  finetune   every member starts from one pretrained single run
             (pretrain, 3 epochs) and trains 4 more epochs: one basin, the
             setting of model soups.
Model fusion (mtl.shell.ensemble): best single member (by mean validation
AUC), mean member, prediction mean, fitted-weight mean, rank mean, uniform
and greedy soup; each written as <workdirs>/fused/<population>/<name>/
results.json.
Score fusion (mtl.search.fusion) on the scratch ensemble's predictions:
s = sum_k w_k f_k(p_k) over click, long_view, like (logit) and the
predicted standardised log play time (identity), w on the simplex. Stated
objective: J = (GAUC(like) + XAUC(play_time)) / 2 on VALIDATION; test is
only reported. Grid (the simplex at step 1/7: 120 points), ES, GA and PSO
(12 candidates x 10 generations = 120 evaluations, --search_seeds seeds
each); the Pareto front of (GAUC like, XAUC play time) over every evaluated
vector. Writes experiments/results/fusion.{json,md,png}.
"""

import pathlib
import sys

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402
from experiments.fusion_report import SHOW, markdown, plot  # noqa: E402

_BUDGET = flags.DEFINE_integer('budget', 120, 'Evaluations per search.')
_SEARCH_SEEDS = flags.DEFINE_integer('search_seeds', 5, 'Seeds per search.')
harness.define_flags(out='fusion', workdirs='fusion')
FLAGS = flags.FLAGS
SEEDS = (0, 1, 2, 3, 4)
OBJECTIVES = ('click', 'long_view', 'like', 'play_time')
TRANSFORMS = ('logit', 'logit', 'logit', 'identity')


def config(**population):
  from configs import kuairand

  c = kuairand.get_config('mmoe,plain')
  c.progress_bar = False
  for k, v in population.items():
    c.population[k] = v
  return c


def populations(root):
  runs = {
    'scratch': config(seeds=SEEDS),
    'bagged': config(seeds=SEEDS, bagging=True),
  }
  pre = config()
  pre.seed, pre.num_epochs = 100, 3
  harness.run(pre, root / 'pretrain', force=FLAGS.force)
  ft = config(seeds=SEEDS)
  ft.init_from, ft.num_epochs = str(root / 'pretrain'), 4
  runs['finetune'] = ft
  for name, c in runs.items():
    harness.run(c, root / name, force=FLAGS.force)
  return runs


def model_fusion(name, c, root):
  from mtl.shell import ensemble

  group = ensemble.load(c, root / name)
  cache = {s: ensemble.predict(group, s) for s in ('validation', 'test')}
  fused = ensemble.fuse(group, cache=cache)
  sel = [ensemble.selection(m['validation']) for m in fused['members']]
  best = fused['members'][int(max(range(len(sel)), key=sel.__getitem__))]
  rows = {'best single': best}
  mean_member = {}
  for split in ('validation', 'test'):
    keys = fused['members'][0][split]
    mean_member[split] = {
      k: float(sum(m[split][k] for m in fused['members']) / len(sel))
      for k in keys
    }
  rows['mean member'] = mean_member
  for k in ('mean', 'fitted', 'rank', 'uniform_soup', 'greedy_soup'):
    rows[k] = fused[k]
  for k, r in rows.items():
    ensemble.write(root / 'fused' / name, k.replace(' ', '_'), r)
  return group, cache, fused, rows


def score_fusion(group, cache):
  import numpy as np

  from mtl.core import ranking_metrics as rm
  from mtl.search import fusion

  names = [t.name for t in group.tasks]
  idx = [names.index(o) for o in OBJECTIVES]
  like, play = names.index('like'), names.index('play_time')

  def setup(split):
    preds = cache[split].mean(0)[idx]  # The scratch ensemble's mean.
    labels = group.dataset.splits[split]['labels']
    users = group.users(split)

    def metrics(w):
      s = fusion.fuse(preds, w, transforms=TRANSFORMS)
      return (rm.gauc(labels[like], s, users), rm.xauc(labels[play], s, users))

    return metrics

  val, test = setup('validation'), setup('test')
  seen = {}

  def valc(w):  # Validation metrics, each vector computed once.
    key = tuple(np.round(w, 12))
    if key not in seen:
      seen[key] = val(w)
    return seen[key]

  def objective(w):
    return float(np.mean(valc(w)))

  searches = {
    'grid': [fusion.search('grid', objective, 4, budget=_BUDGET.value)]
  }
  for name in ('es', 'ga', 'pso'):
    searches[name] = [
      fusion.search(
        name, objective, 4, budget=_BUDGET.value, popsize=12, seed=s
      )
      for s in range(_SEARCH_SEEDS.value)
    ]
  top = max(r['best_score'] for rs in searches.values() for r in rs)

  def summary(rs):
    need = [
      int(np.argmax(r['best_after'] >= top - 1e-3)) + 1
      if r['best_after'][-1] >= top - 1e-3
      else None
      for r in rs
    ]
    best = max(rs, key=lambda r: r['best_score'])
    return {
      'evaluations': rs[0]['evaluations'],
      'best_val_objective': [r['best_score'] for r in rs],
      'evaluations_to_within_1e-3_of_best': need,
      'best_weights': best['best_weights'].tolist(),
      'val_gauc_like_xauc_play': list(valc(best['best_weights'])),
      'test_gauc_like_xauc_play': list(test(best['best_weights'])),
      'best_after_mean': np.mean([r['best_after'] for r in rs], 0).tolist(),
    }

  out = {k: summary(rs) for k, rs in searches.items()}
  baselines = {}
  for i, o in enumerate(OBJECTIVES):
    w = np.eye(4)[i] * 4
    baselines[f'{o} alone'] = {'val': list(val(w)), 'test': list(test(w))}
  baselines['equal weights'] = {
    'val': list(val(np.ones(4))),
    'test': list(test(np.ones(4))),
  }
  every = np.array(
    [w for rs in searches.values() for r in rs for w in r['weights']]
  )
  every = np.unique(np.round(every, 12), axis=0)
  wf, pf = fusion.front(every, lambda w: valc(w)[0], lambda w: valc(w)[1])
  front = [
    {'weights': w.tolist(), 'val': p.tolist(), 'test': list(test(w))}
    for w, p in zip(wf, pf, strict=True)
  ]
  cloud = np.array([valc(w) for w in every[:: max(len(every) // 600, 1)]])
  return {
    'objective': '(GAUC like + XAUC play_time) / 2, validation',
    'objectives': list(OBJECTIVES),
    'transforms': list(TRANSFORMS),
    'top_val_objective': top,
    'searches': out,
    'baselines': baselines,
    'pareto_front': front,
    'evaluated_vectors': len(every),
    'cloud': cloud.tolist(),
  }


def bagging_comparison(tables):
  from experiments.harness import stats

  out = {}
  for key in SHOW:
    k = f'test/{key}'
    a = [m['test'][k] for m in tables['bagged']['fused']['members']]
    b = [m['test'][k] for m in tables['scratch']['fused']['members']]
    diff, z = stats.paired_diff_in_se(a, b)
    out[key] = {
      'bagged_members': stats.mean_std(a),
      'scratch_members': stats.mean_std(b),
      'member_diff': diff,
      'member_diff_in_se': z,
      'bagged_ensemble': tables['bagged']['rows']['mean']['test'][k],
      'scratch_ensemble': tables['scratch']['rows']['mean']['test'][k],
    }
  return out


def main(argv):
  del argv
  root = pathlib.Path(FLAGS.workdirs)
  runs = populations(root)
  tables = {}
  for name, c in runs.items():
    group, cache, fused, rows = model_fusion(name, c, root)
    tables[name] = {'rows': rows, 'fused': fused}
    if name == 'scratch':
      scoring = score_fusion(group, cache)
  record = {
    'dataset': 'kuairand feedback slice (biased: impressions with a like or '
    'a hate only), configs/kuairand.py:mmoe',
    'model_fusion': {
      n: {
        k: {s: r[s] for s in ('validation', 'test')}
        for k, r in t['rows'].items()
      }
      for n, t in tables.items()
    },
    'greedy_soup_ingredients': {
      n: t['fused']['greedy_soup']['ingredients'] for n, t in tables.items()
    },
    'bagging': bagging_comparison(tables),
    'score_fusion': scoring,
  }
  harness.write_results(
    'fusion', record, markdown(record), out=FLAGS.out, figures=plot(scoring)
  )


if __name__ == '__main__':
  harness.run_main(main)
