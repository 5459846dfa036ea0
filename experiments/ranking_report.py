"""Test ranking metrics of finished populations, and their markdown table.

Shared by experiments/sequence_encoders.py and experiments/two_tower.py.
`member_metrics(config, workdir)` loads each member's selected-epoch params
(mtl.shell.ensemble.load), predicts the test split and evaluates it with
mtl.shell.ensemble.evaluate (mtl.core.ranking_metrics, exact): per binary
task auc and gauc (per-user AUC weighted by impressions, users with both
classes), per regression xauc and rmse (in the trained label space), per
weighted-logistic watch time xauc. Users are the 'user_id' column; a
test row whose user is unseen in training (the out-of-vocabulary id) is a
group of its own, as mtl-eval groups it (so it drops out of GAUC and
XAUC), never pooled with the other unseen users' rows.
`table(rows, key, base)` writes one metric per line and one variant per
column: mean +- std over seeds and (z), the difference to the `base`
column in standard errors (Welch).
"""

import numpy as np

from experiments.harness import stats

METRICS = ('auc', 'gauc', 'xauc', 'rmse')


def member_metrics(config, workdir) -> tuple[list[dict], dict]:
  """([{metric/task: value} per member], facts of the test split): the
  share of test rows whose user is unseen in training, and per binary task
  the share of its rows in users with both classes (what GAUC covers) and
  how many such users there are."""
  from mtl.core import ranking_metrics as rm
  from mtl.data.encoding import OOV_ID
  from mtl.shell import ensemble

  group = ensemble.load(config, workdir)
  users = group.users
  unseen = float(np.mean(users('test') == OOV_ID))

  def own_group(split):  # Each unseen user's row apart, as mtl-eval.
    u = users(split).astype(np.int64)
    return np.where(u == OOV_ID, -1 - np.arange(len(u)), u)

  group.users = own_group
  split = group.dataset.splits['test']
  facts = {'unseen_user_rows': unseen, 'gauc_rows': {}, 'gauc_users': {}}
  for t, task in enumerate(group.tasks):
    keep = split['mask'][t] > 0
    if task.kind == 'binary':
      y = split['labels'][t][keep]
      _, rows, both = rm.per_user_auc(y, y, own_group('test')[keep])
      facts['gauc_rows'][task.name] = float(rows[both].sum() / keep.sum())
      facts['gauc_users'][task.name] = int(both.sum())
  out = []
  for preds in ensemble.predict(group, 'test'):
    m = ensemble.evaluate(preds, group, 'test')
    out.append(
      {
        k.removeprefix('test/'): None if np.isnan(v) else float(v)
        for k, v in m.items()
        if k.split('/')[1] in METRICS
      }
    )
  return out, facts


def by_key(members: list[dict]) -> dict:
  """{metric/task: [value per member]}, metrics in METRICS order."""
  keys = sorted(members[0], key=lambda k: (METRICS.index(k.split('/')[0]), k))
  return {k: [m[k] for m in members] for k in keys}


def _cell(values, base) -> str:
  if any(v is None for v in values):
    return 'n/a'
  m, s = stats.mean_std(values)
  cell = f'{m:.4f} +- {s:.4f}'
  if base is not None and base is not values:
    _, z = stats.diff_in_se(values, base)
    cell += f' ({z:+.1f})'
  return cell


def table(rows, key: str, base: str) -> list[str]:
  """Markdown lines: metric/task down, rows[i][key] across."""
  names = [r[key] for r in rows]
  ref = next((r for r in rows if r[key] == base), None)
  lines = [
    '| metric | ' + ' | '.join(names) + ' |',
    '|---|' + '---:|' * len(names),
    '| seeds | ' + ' | '.join(str(r['seeds']) for r in rows) + ' |',
  ]
  for k in rows[0]['test']:
    b = ref['test'][k] if ref is not None else None
    cells = [_cell(r['test'][k], b) for r in rows]
    lines.append(f'| {k} | ' + ' | '.join(cells) + ' |')
  return lines


def coverage(row) -> str:
  """One line: what GAUC covers on the row's test split."""
  f = row['test_split']
  parts = [
    f'{t} {f["gauc_rows"][t]:.0%} of rows ({f["gauc_users"][t]} users)'
    for t in f['gauc_rows']
  ]
  line = 'GAUC covers the users with both classes: ' + ', '.join(parts)
  if f['unseen_user_rows']:
    line += (
      f'; {f["unseen_user_rows"]:.1%} of test rows have a user unseen in '
      'training (each row its own group)'
    )
  return line + '.'


def run_row(config, workdir, *, force: bool, **names) -> dict:
  """Trains (or reuses) the population `config` in `workdir` and returns
  its results row: `names` (e.g. dataset=..., model=...), the seeds,
  epochs, selected epochs, wall time, the test-split facts and
  {metric/task: [value per member]}; prints the first metric."""
  from experiments import harness

  result = harness.run(config, workdir, force=force)
  members, facts = member_metrics(config, workdir)
  test = by_key(members)
  row = {
    **names,
    'seeds': len(members),
    'epochs': config.num_epochs,
    'selected_epochs': [m['selected_epoch'] for m in result['members']],
    'wall_time_s': result['wall_time_s'],
    'test_split': facts,
    'test': test,
  }
  first = next(iter(test))
  m, s = stats.mean_std(test[first])
  label = ' '.join(f'{v:16s}' for v in names.values())
  print(f'{label} {first} {m:.4f} +- {s:.4f}', flush=True)
  return row


def tables(rows, key: str, base: str, header: str) -> str:
  """The markdown of `rows`: `header`, then per dataset its table (one
  `key` per column, (z) against `base`) and its test-split coverage."""
  lines = [header, '']
  for dataset in dict.fromkeys(r['dataset'] for r in rows):
    part = [r for r in rows if r['dataset'] == dataset]
    lines += [
      f'### {dataset} ({part[0]["epochs"]} epochs)',
      '',
      *table(part, key, base),
      '',
      coverage(part[0]),
      '',
    ]
  return '\n'.join(lines) + '\n'
