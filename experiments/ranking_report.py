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


def member_metrics(config, workdir) -> tuple[list[dict], float]:
  """([{metric/task: value} per member], share of test rows whose user is
  unseen in training)."""
  from mtl.data import schema
  from mtl.shell import ensemble

  group = ensemble.load(config, workdir)
  users = group.users
  unseen = float(np.mean(users('test') == schema.OOV_ID))

  def own_group(split):  # Each unseen user's row apart, as mtl-eval.
    u = users(split).astype(np.int64)
    return np.where(u == schema.OOV_ID, -1 - np.arange(len(u)), u)

  group.users = own_group
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
  return out, unseen


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
