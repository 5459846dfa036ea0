"""Census-income test AUCs of every task-balancing method, a few seeds each.

  python experiments/weighting_census.py [--config=configs/census_mmoe.py]
      [--methods=equal,gradnorm,...] [--seeds=3] [--jobs=2]

Each (method, seed) is one `mtl-train` run of the config with
`--config.weighting_name=<method> --config.seed=<seed>` (default
hyper-parameters of configs/common.py; model selection on the validation AUC
of the first task, as everywhere in mtl), `--jobs` at a time; a finished
run's results.json under --workdirs is reused, so a rerun continues. Writes
experiments/results/weighting_census.{json,md}: mean +- std of the test AUCs
per task, and the mean training examples/s.
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run(config, method, seed, workdir):
  done = workdir / 'results.json'
  if done.exists():  # A finished run of an earlier invocation.
    r = json.loads(done.read_text())
    if (r['weighting_name'], r['seed']) == (method, seed):
      return r
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  cmd = [
    sys.executable,
    '-m',
    'mtl.shell.main',
    f'--config={config}',
    f'--workdir={workdir}',
    f'--config.weighting_name={method}',
    f'--config.seed={seed}',
    '--config.progress_bar=false',
  ]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f'{" ".join(cmd)}:\n{proc.stderr[-2000:]}')
  return json.loads((workdir / 'results.json').read_text())


def main():
  from mtl.core.weighting import WEIGHTINGS

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/census_mmoe.py')
  parser.add_argument('--methods', default=None)
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--jobs', type=int, default=2)
  parser.add_argument('--workdirs', default=str(REPO / 'workdirs/weighting'))
  parser.add_argument(
    '--out', default=str(REPO / 'experiments/results/weighting_census')
  )
  args = parser.parse_args()
  methods = (
    args.methods.split(',')
    if args.methods
    else ['equal'] + sorted(set(WEIGHTINGS) - {'equal', 'fixed', 'scheduled'})
  )
  root = pathlib.Path(args.workdirs)
  jobs = [(m, s) for m in methods for s in range(args.seeds)]
  results = {}
  with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    futures = {
      pool.submit(run, args.config, m, s, root / f'{m}_seed{s}'): (m, s)
      for m, s in jobs
    }
    for f in concurrent.futures.as_completed(futures):
      m, s = futures[f]
      r = f.result()
      results.setdefault(m, []).append(r)
      print(m, s, r['test'], flush=True)
  rows = []
  for m in methods:
    rs = results[m]
    tasks = rs[0]['tasks']
    row = {'method': m, 'seeds': len(rs), 'selected_epochs': []}
    for t in tasks:
      v = [r['test'][f'test/auc/{t}'] for r in rs]
      row[t] = (statistics.mean(v), statistics.pstdev(v))
    row['examples_per_s'] = statistics.mean(
      r['train_examples_per_s'] for r in rs
    )
    row['selected_epochs'] = [r['selected_epoch'] for r in rs]
    rows.append(row)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix('.json').write_text(
    json.dumps({'config': args.config, 'rows': rows}, indent=2)
  )
  tasks = results[methods[0]][0]['tasks']
  lines = [
    f'Census-income, `{args.config}`, {args.seeds} seeds per method '
    f'(`python experiments/weighting_census.py`): test AUC mean +- std.',
    '',
    '| method | ' + ' | '.join(tasks) + ' | examples/s |',
    '|---|' + '---:|' * (len(tasks) + 1),
  ]
  for row in rows:
    cells = ' | '.join(f'{row[t][0]:.4f} +- {row[t][1]:.4f}' for t in tasks)
    lines.append(
      f'| `{row["method"]}` | {cells} | {row["examples_per_s"]:,.0f} |'
    )
  out.with_suffix('.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
