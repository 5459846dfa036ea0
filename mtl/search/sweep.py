"""Ablation grids: architecture x balancing method x seeds (shell code).

A sweep file is plain Python defining `get_sweep()`, returning a dict:

  name       the sweep's name: its W&B group prefix and tag
  configs    config files, one per architecture (the grid's first axis)
  grid       {dotted config key: [values]}: further axes, for example
             {'weighting_name': ['equal', 'uncertainty', 'gradnorm']}
  seeds      the seeds of every cell
  overrides  {dotted config key: value} applied to every run
  metric     optional: the W&B sweep's metric, e.g. 'val/auc/income'

Each cell of configs x grid is one population run (`mtl.shell.trainer`)
with one member per seed, in `<root>/<name>/<cell>/`: every member's W&B run
has group `<name>/<cell>` and tags (name, architecture, values of the grid).
The summary (`summary.md`, `summary.csv` in `<root>/<name>/`) aggregates the
members' results.json: mean +- std over seeds of each test and validation
metric per cell. `--export_wandb` writes `wandb_sweep.yaml`, the same grid
for `wandb sweep` on a W&B server, one `mtl-train` run per grid point.

  mtl-sweep --sweep=configs/sweeps/census_ablation.py --root=workdirs/sweeps
"""

import csv
import itertools
import json
import pathlib
import statistics
import sys

from mtl.errors import ConfigError
from mtl.search import sweep_config

REQUIRED = ('name', 'configs', 'seeds')
KNOWN = REQUIRED + ('grid', 'overrides', 'metric')


def load_sweep(path) -> dict:
  """The dict of a sweep file's `get_sweep()`, checked."""
  path = pathlib.Path(path)
  module = sweep_config.load_module(path)
  if not hasattr(module, 'get_sweep'):
    raise ConfigError(f'{path}: defines no get_sweep()')
  sweep = dict(module.get_sweep())
  missing = [k for k in REQUIRED if k not in sweep]
  unknown = sorted(set(sweep) - set(KNOWN))
  if missing or unknown:
    raise ConfigError(
      f'{path}: get_sweep() keys missing {missing}, unknown {unknown}; '
      f'expected {list(KNOWN)}'
    )
  sweep.setdefault('grid', {})
  sweep.setdefault('overrides', {})
  if not sweep['seeds'] or not sweep['configs']:
    raise ConfigError(f'{path}: seeds and configs must be non-empty')
  for key, values in sweep['grid'].items():
    if isinstance(values, str) or not len(values):
      raise ConfigError(
        f'{path}: grid[{key!r}] is {values!r}, expected a non-empty list'
      )
  return sweep


def cells(sweep) -> list[dict]:
  """[{'config': file, 'values': {key: value}, 'name': str}, ...]."""
  keys = list(sweep['grid'])
  out = []
  for spec in sweep['configs']:
    for combo in itertools.product(*(sweep['grid'][k] for k in keys)):
      values = dict(zip(keys, combo, strict=True))
      path, _, arg = spec.partition(':')
      parts = [pathlib.Path(path).stem + (f'[{arg}]' if arg else '')]
      parts += [f'{k.split(".")[-1]}={v}' for k, v in values.items()]
      out.append({'config': spec, 'values': values, 'name': ','.join(parts)})
  return out


def run_sweep(sweep, root, *, repo: pathlib.Path) -> list[dict]:
  """Runs every cell not yet finished; returns the summary rows."""
  from mtl.shell import trainer

  base = pathlib.Path(root) / sweep['name']
  for cell in cells(sweep):
    workdir = base / cell['name']
    if (workdir / 'results.json').is_file():
      continue  # Finished by an earlier invocation.
    trainer.train(sweep_config.cell_config(sweep, cell, repo), workdir)
  return summarize(sweep, base)


def _mean_std(values):
  if len(values) < 2:
    return values[0], 0.0
  return statistics.mean(values), statistics.stdev(values)


def summarize(sweep, base: pathlib.Path) -> list[dict]:
  """Writes summary.md and summary.csv from the cells' results.json."""
  rows = []
  for cell in cells(sweep):
    path = base / cell['name'] / 'results.json'
    if not path.is_file():
      continue
    members = json.loads(path.read_text())['members']
    row = {'cell': cell['name'], 'n': len(members)}
    row.update({k.split('.')[-1]: v for k, v in cell['values'].items()})
    row['model'] = members[0]['model_name']
    for split in ('test', 'validation'):
      for key in members[0][split]:
        mean, std = _mean_std([m[split][key] for m in members])
        row[f'{key}_mean'], row[f'{key}_std'] = mean, std
    rows.append(row)
  if not rows:
    return rows
  fields = list(rows[0])
  with (base / 'summary.csv').open('w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
  metrics = sorted(
    k[: -len('_mean')]
    for k in fields
    if k.startswith('test/') and k.endswith('_mean') and '/logloss/' not in k
  )
  head = ['model', *(k.split('.')[-1] for k in sweep['grid']), 'n']
  lines = [
    f'Sweep `{sweep["name"]}`: test metrics, mean +- std over seeds '
    f'{list(sweep["seeds"])}.',
    '',
    '| ' + ' | '.join(head + metrics) + ' |',
    '|' + '---|' * len(head) + '---:|' * len(metrics),
  ]
  for r in rows:
    cols = [str(r[h]) for h in head]
    cols += [f'{r[m + "_mean"]:.4f} +- {r[m + "_std"]:.4f}' for m in metrics]
    lines.append('| ' + ' | '.join(cols) + ' |')
  (base / 'summary.md').write_text('\n'.join(lines) + '\n')
  return rows


def wandb_sweep_yaml(sweep) -> str:
  """The grid as a `wandb sweep` file: one mtl-train run per grid point.

  The W&B agent substitutes `${args}` with `--config.<key>=<value>` per
  parameter; the shell wrapper gives every run its own workdir (the agent
  sets WANDB_RUN_ID, and mtl's W&B writer joins that run).
  """
  params = {'config': list(sweep['configs'])}
  params.update({f'config.{k}': list(v) for k, v in sweep['grid'].items()})
  params['config.seed'] = list(sweep['seeds'])
  fixed = ' '.join(f'--config.{k}={v}' for k, v in sweep['overrides'].items())
  script = (
    f'exec mtl-train --workdir=workdirs/{sweep["name"]}/$WANDB_RUN_ID '
    f'--config.wandb.mode=online {fixed} "$@"'
  ).replace('  ', ' ')
  lines = [f'name: {sweep["name"]}', 'method: grid']
  if sweep.get('metric'):
    lines += ['metric:', f'  name: {sweep["metric"]}', '  goal: maximize']
  lines.append('parameters:')
  for k, values in params.items():
    lines.append(f'  {k}:')
    lines.append('    values: ' + json.dumps(values))
  lines += [
    'command:',
    '  - sh',
    '  - -c',
    '  - ' + json.dumps(script),
    '  - sh',
    '  - ${args}',
  ]
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  import argparse

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sweep', required=True, help='a sweep file')
  parser.add_argument('--root', default='workdirs/sweeps')
  parser.add_argument(
    '--export_wandb', action='store_true', help='write wandb_sweep.yaml only'
  )
  args = parser.parse_args(argv)
  repo = pathlib.Path.cwd()
  sys.path.insert(0, str(repo))  # `from configs import common` in configs.
  try:
    sweep = load_sweep(args.sweep)
    base = pathlib.Path(args.root) / sweep['name']
    if args.export_wandb:
      base.mkdir(parents=True, exist_ok=True)
      (base / 'wandb_sweep.yaml').write_text(wandb_sweep_yaml(sweep))
      print(base / 'wandb_sweep.yaml')
      return 0
    rows = run_sweep(sweep, args.root, repo=repo)
  except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
    print(f'mtl-sweep: error: {e}', file=sys.stderr)
    return 2
  print((base / 'summary.md').read_text() if rows else 'no finished cells')
  return 0


def run():
  sys.exit(main())
