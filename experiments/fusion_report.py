"""The report of experiments/fusion.py: its markdown, reading and plot."""

from experiments import harness

SHOW = (
  'auc/click',
  'auc/like',
  'auc/long_view',
  'gauc/like',
  'xauc/play_time',
  'mse/play_time',
)


def markdown(r):
  lines = [
    'KuaiRand feedback slice (BIASED: only impressions with a like or a '
    'hate), MMoE, populations of 5 (seeds 0-4). '
    '`python experiments/fusion.py`. Test metrics; selection on validation.',
    '',
  ]
  head = '| population | model | ' + ' | '.join(SHOW) + ' |'
  lines += [head, '|---|---|' + '---:|' * len(SHOW)]
  for pop, rows in r['model_fusion'].items():
    for name, m in rows.items():
      cells = ' | '.join(
        f'{m["test"]["test/" + k]:.4f}' if 'test/' + k in m['test'] else '-'
        for k in SHOW
      )
      lines.append(f'| {pop} | {name} | {cells} |')
  lines += [
    '',
    'Greedy soup ingredients: ' + str(r['greedy_soup_ingredients']),
    '',
  ]
  lines += ['Bagging (test; members: mean +- sd of 5, paired by seed):', '']
  lines += [
    '| metric | bagged members | scratch members | diff (SE) '
    '| bagged ensemble | scratch ensemble |',
    '|---|---:|---:|---:|---:|---:|',
  ]
  for k, b in r['bagging'].items():
    lines.append(
      f'| {k} | {b["bagged_members"][0]:.4f} +- {b["bagged_members"][1]:.4f} | '
      f'{b["scratch_members"][0]:.4f} +- {b["scratch_members"][1]:.4f} | '
      f'{b["member_diff"]:+.4f} ({b["member_diff_in_se"]:+.1f}) | '
      f'{b["bagged_ensemble"]:.4f} | {b["scratch_ensemble"]:.4f} |'
    )
  s = r['score_fusion']
  lines += [
    '',
    f'Score fusion of {s["objectives"]} ({s["transforms"]}) on the scratch '
    f'ensemble: objective {s["objective"]}; best found '
    f'{s["top_val_objective"]:.5f}.',
    '',
    '| search | evaluations | best val objective (per seed) '
    '| evals to within 1e-3 of best | weights | val GAUC like, XAUC play '
    '| test GAUC like, XAUC play |',
    '|---|---:|---|---|---|---|---|',
  ]
  for name, x in s['searches'].items():
    lines.append(
      f'| {name} | {x["evaluations"]} | '
      + ', '.join(f'{v:.5f}' for v in x['best_val_objective'])
      + f' | {x["evaluations_to_within_1e-3_of_best"]} | '
      + ', '.join(f'{v:.2f}' for v in x['best_weights'])
      + ' | '
      + ', '.join(f'{v:.4f}' for v in x['val_gauc_like_xauc_play'])
      + ' | '
      + ', '.join(f'{v:.4f}' for v in x['test_gauc_like_xauc_play'])
      + ' |'
    )
  for name, x in s['baselines'].items():
    lines.append(
      f'| {name} | 1 | | | | '
      + ', '.join(f'{v:.4f}' for v in x['val'])
      + ' | '
      + ', '.join(f'{v:.4f}' for v in x['test'])
      + ' |'
    )
  lines += [
    '',
    f'Pareto front (validation GAUC like vs XAUC play time): '
    f'{len(s["pareto_front"])} of {s["evaluated_vectors"]} evaluated vectors.',
    '',
    '## Reading',
    '',
    *conclusions(r),
  ]
  return '\n'.join(lines) + '\n'


def conclusions(r):
  import numpy as np

  mf, out = r['model_fusion'], []

  def t(pop, model, key):
    return mf[pop][model]['test'].get('test/' + key, float('nan'))

  for pop in mf:
    d_best = t(pop, 'mean', 'auc/click') - t(pop, 'best single', 'auc/click')
    d_mem = t(pop, 'mean', 'auc/click') - t(pop, 'mean member', 'auc/click')
    d_mse = t(pop, 'mean', 'mse/play_time') - t(
      pop, 'best single', 'mse/play_time'
    )
    soup = t(pop, 'uniform_soup', 'auc/click') - t(pop, 'mean', 'auc/click')
    d_fit = t(pop, 'fitted', 'auc/click') - t(pop, 'mean', 'auc/click')
    out.append(
      f'- {pop}: the 5-member prediction mean vs the best single member '
      f'(chosen on validation): click AUC {d_best:+.4f}, play-time MSE '
      f'{d_mse:+.4f}; vs the mean member {d_mem:+.4f} click AUC. Fitted '
      f'weights: {d_fit:+.4f}'
      f' vs the plain mean. Uniform soup vs the mean: {soup:+.4f} click AUC; '
      f'greedy soup kept {len(r["greedy_soup_ingredients"][pop])} member(s).'
    )
  b = r['bagging']
  out.append(
    '- Bagging: members on a Poisson bootstrap vs the same seeds on all rows '
    '(paired, test): '
    + ', '.join(
      f'{k} {v["member_diff"]:+.4f} ({v["member_diff_in_se"]:+.1f} SE)'
      for k, v in b.items()
    )
    + '; ensembles: '
    + ', '.join(
      f'{k} {v["bagged_ensemble"] - v["scratch_ensemble"]:+.4f}'
      for k, v in b.items()
    )
    + '.'
  )
  s = r['score_fusion']
  best = {k: max(v['best_val_objective']) for k, v in s['searches'].items()}
  worst = {k: min(v['best_val_objective']) for k, v in s['searches'].items()}
  test_j = {
    k: float(np.mean(v['test_gauc_like_xauc_play']))
    for k, v in s['searches'].items()
  }
  base = {k: float(np.mean(v['test'])) for k, v in s['baselines'].items()}
  val_base = {k: float(np.mean(v['val'])) for k, v in s['baselines'].items()}
  out.append(
    '- Score fusion, validation objective after '
    f'{s["searches"]["es"]["evaluations"]} evaluations (best / worst seed): '
    + ', '.join(f'{k} {best[k]:.4f} / {worst[k]:.4f}' for k in best)
    + f'; the best single objective, {max(val_base, key=val_base.get)}, '
    f'{max(val_base.values()):.4f}. On test the selected weights give '
    + ', '.join(f'{k} {v:.4f}' for k, v in test_j.items())
    + f' against {max(base, key=base.get)} {max(base.values()):.4f}.'
  )
  return out


def plot(s):
  import numpy as np

  plt = harness.pyplot()
  fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5))
  c = np.array(s['cloud'])
  a.scatter(c[:, 0], c[:, 1], s=6, c='0.7', label='evaluated weights')
  f = np.array([x['val'] for x in s['pareto_front']])
  a.plot(f[:, 0], f[:, 1], 'k.-', label='Pareto front')
  for name, x in s['baselines'].items():
    a.scatter(*x['val'], marker='x', s=40, label=name)
  a.set_xlabel('validation GAUC, like')
  a.set_ylabel('validation XAUC, play time')
  a.set_title('Score fusion: like vs watch time')
  a.legend(fontsize=7)
  for name, x in s['searches'].items():
    y = x['best_after_mean']
    b.plot(np.arange(1, len(y) + 1), y, label=name)
  b.set_xlabel('evaluations')
  b.set_ylabel('best validation objective (mean over seeds)')
  b.set_ylim(s['top_val_objective'] - 0.02, s['top_val_objective'] + 0.002)
  b.set_title('Search progress')
  b.legend()
  fig.tight_layout()
  return fig
