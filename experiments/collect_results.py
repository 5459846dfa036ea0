"""Collects the results.json of several workdirs into one markdown table.

  python experiments/collect_results.py workdirs/census_* \
    --out=experiments/results/census_single_seed.md

One row per workdir: model, protocol, task group, selected epoch, validation
and test AUC of each binary task (MSE of each regression task), wall time.
Without --out the table is printed only; with it, <out>.md and <out>.json
(the rows) are written.
"""

import json
import pathlib
import sys

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402

harness.define_flags(out='')  # No --out: print the table only.
FLAGS = flags.FLAGS


def row(workdir: pathlib.Path) -> dict:
  results_path = workdir / 'results.json'
  if not results_path.is_file():
    raise SystemExit(f'{results_path}: no results.json (run not finished?)')
  r = json.loads(results_path.read_text())
  out = {
    'model': r['model_name'],
    'protocol': r['dataset'].get('protocol', '-'),
    'group': str(r['dataset'].get('task_group', '-')),
    'epoch': f'{r["selected_epoch"]}/{r["num_epochs"]}',
  }
  for split, prefix in (('test', 'test'), ('validation', 'val')):
    for key, value in sorted(r[split].items()):
      if '/auc/' in key or '/mse/' in key:
        out[key.replace(f'{prefix}/', f'{split} ')] = f'{value:.4f}'
  out['wall (s)'] = f'{r["wall_time_s"]:.0f}'
  out['workdir'] = f'`{workdir}`'
  return out


def main(argv):
  if len(argv) < 2:
    raise app.UsageError('expected one or more workdirs')
  rows = [row(pathlib.Path(w)) for w in argv[1:]]
  columns = list(dict.fromkeys(k for r in rows for k in r))
  lines = harness.markdown_table(
    columns, [[r.get(c, '') for c in columns] for r in rows]
  )
  if FLAGS.out:
    harness.write_results('collect_results', rows, lines, out=FLAGS.out)
  else:
    print('\n'.join(lines))


if __name__ == '__main__':
  harness.run_main(main)
