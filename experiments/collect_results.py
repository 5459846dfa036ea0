"""Collects the results.json of several workdirs into one markdown table.

  python experiments/collect_results.py workdirs/census_* \
    --out=experiments/results/census_single_seed.md

One row per workdir: model, protocol, task group, selected epoch, validation
and test AUC of each binary task (MSE of each regression task), wall time.
"""

import argparse
import json
import pathlib


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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('workdirs', nargs='+', type=pathlib.Path)
  parser.add_argument('--out', type=pathlib.Path)
  args = parser.parse_args()
  rows = [row(w) for w in args.workdirs]
  columns = list(dict.fromkeys(k for r in rows for k in r))
  lines = [
    '| ' + ' | '.join(columns) + ' |',
    '|' + '---|' * len(columns),
  ]
  lines += [
    '| ' + ' | '.join(r.get(c, '') for c in columns) + ' |' for r in rows
  ]
  text = '\n'.join(lines) + '\n'
  print(text, end='')
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == '__main__':
  main()
