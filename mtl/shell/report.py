"""`mtl-report --workdir=W`: plots of a run from its metrics.jsonl.

Writes W/report/ (or --out): PNGs, report.md (the results and the plots) and
series.json (every line drawn: steps and values, per member for a
population, so what a plot shows can be checked against metrics.jsonl):

  training.png       per task: training loss; each validation metric
  weights.png        the balancing method's task weights over steps
  gates.png          MoE models: mean gate weight of each task on each
                     expert over steps, one panel per gate and task
  grad_cosines.png   pairwise cosines of the tasks' shared gradients
                     (diagnostics_every_steps > 0)

A population draws every member thinly, their mean bold and mean +- one
standard deviation shaded. Plots without data (no gates, no diagnostics)
are left out.
"""

import collections
import json
import pathlib
import re

import numpy as np

from mtl.errors import WorkdirError
from mtl.shell import cli
from mtl.shell.json_files import write_json

# figure -> [(panel title, pattern of metric keys, line label group)]
FIGURES = {
  'training': [
    ('train loss', r'train/loss/(.+)'),
    ('val auc', r'val/auc/(.+)'),
    ('val logloss', r'val/logloss/(.+)'),
    ('val mse', r'val/mse/(.+)'),
  ],
  'weights': [('task weights', r'train/weight/(.+)')],
  'gates': [('{0} / {1}', r'diag/gate/(.+)/([^/]+)/(\d+)')],
  'grad_cosines': [('gradient cosine', r'diag/grad_cos/(.+)')],
}


def read_metrics(path: pathlib.Path) -> dict[str, tuple[list, list]]:
  """{key: (steps, values)} of a metrics.jsonl (None values skipped)."""
  series = collections.defaultdict(lambda: ([], []))
  for line in path.read_text().splitlines():
    if not line.strip():
      continue
    row = json.loads(line)
    for k, v in row.items():
      if k != 'step' and isinstance(v, int | float) and v is not None:
        series[k][0].append(row['step'])
        series[k][1].append(float(v))
  return dict(series)


def _members(workdir: pathlib.Path) -> list[tuple[str | None, pathlib.Path]]:
  root = workdir / 'members'
  if root.is_dir():
    found = sorted(p for p in root.iterdir() if (p / 'metrics.jsonl').exists())
    if found:
      return [(p.name, p / 'metrics.jsonl') for p in found]
  if (workdir / 'metrics.jsonl').exists():
    return [(None, workdir / 'metrics.jsonl')]
  raise WorkdirError(
    f'{workdir} has no metrics.jsonl, expected the workdir of an mtl-train run'
  )


def panels(per_member: list[dict]) -> dict:
  """{figure: {panel: {label: {'steps', 'members': [values per member],
  'mean', 'std'}}}} of the series every member has."""
  out = {}
  keys = set(per_member[0]).intersection(*per_member[1:])
  for figure, specs in FIGURES.items():
    for title, pattern in specs:
      for key in sorted(keys):
        m = re.fullmatch(pattern, key)
        if not m:
          continue
        groups = m.groups()
        panel = title.format(*groups) if '{' in title else title
        label = f'expert {groups[-1]}' if figure == 'gates' else groups[-1]
        steps = per_member[0][key][0]
        values = [s[key][1] for s in per_member]
        if any(len(v) != len(steps) for v in values):
          n = min(len(v) for v in values)
          steps, values = steps[:n], [v[:n] for v in values]
        arr = np.asarray(values)
        out.setdefault(figure, {}).setdefault(panel, {})[label] = {
          'key': key,
          'steps': steps,
          'members': values,
          'mean': arr.mean(0).tolist(),
          'std': arr.std(0).tolist(),
        }
  return out


def _draw(figure: str, data: dict, path: pathlib.Path, population: bool):
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  n = len(data)
  cols = min(n, 4)
  rows = -(-n // cols)
  fig, axes = plt.subplots(
    rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False
  )
  for ax, (panel, lines) in zip(axes.flat, data.items(), strict=False):
    for i, (label, s) in enumerate(lines.items()):
      color = f'C{i % 10}'
      steps, mean = np.asarray(s['steps']), np.asarray(s['mean'])
      if population:
        for v in s['members']:
          ax.plot(steps, v, color=color, alpha=0.25, lw=0.7)
        std = np.asarray(s['std'])
        ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)
      ax.plot(
        steps,
        mean,
        color=color,
        lw=1.6,
        label=label,
        marker='.' if len(steps) < 30 else None,
      )
    ax.set_title(panel, fontsize=10)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  for ax in list(axes.flat)[n:]:
    ax.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _results_table(workdir: pathlib.Path) -> list[str]:
  path = workdir / 'results.json'
  if not path.exists():
    return []
  r = json.loads(path.read_text())
  members = r.get('members', [r])
  keys = [k for k in members[0].get('validation', {})] + [
    k for k in members[0].get('test', {})
  ]
  lines = [
    '| metric | ' + ('value' if len(members) == 1 else 'mean | std') + ' |'
  ]
  lines.append('|---|---:|' + ('' if len(members) == 1 else '---:|'))
  for k in keys:
    split = 'validation' if k.startswith('val/') else 'test'
    v = np.asarray([m[split][k] for m in members], float)
    if len(members) == 1:
      lines.append(f'| {k} | {v[0]:.4f} |')
    else:
      lines.append(f'| {k} | {v.mean():.4f} | {v.std():.4f} |')
  return lines


def report(workdir, out=None) -> dict:
  """Writes the report (module docstring); returns {figure: png path}."""
  workdir = pathlib.Path(workdir)
  out = pathlib.Path(out) if out else workdir / 'report'
  found = _members(workdir)
  per_member = [read_metrics(p) for _, p in found]
  population = found[0][0] is not None
  data = panels(per_member)
  out.mkdir(parents=True, exist_ok=True)
  written = {}
  for figure, panel_data in data.items():
    written[figure] = out / f'{figure}.png'
    _draw(figure, panel_data, written[figure], population)
  write_json(
    out / 'series.json',
    {'members': [name for name, _ in found], 'figures': data},
  )
  title = workdir.name + (f' ({len(found)} members)' if population else '')
  md = [f'# {title}', '']
  if population:
    md += ['Members thin, their mean bold, mean +- one std shaded.', '']
  md += _results_table(workdir) + ['']
  for figure in written:
    md += [
      f'## {figure.replace("_", " ")}',
      '',
      f'![{figure}]({figure}.png)',
      '',
    ]
  (out / 'report.md').write_text('\n'.join(md))
  return written


def _add_flags(p) -> None:
  p.add_argument('--workdir', required=True, help='A run directory.')
  p.add_argument('--out', default=None, help='Default: <workdir>/report.')


def _main(args) -> None:
  written = report(args.workdir, args.out)
  where = pathlib.Path(args.out or pathlib.Path(args.workdir) / 'report')
  print(f'{", ".join(p.name for p in written.values())} -> {where}', flush=True)


def run(argv=None) -> None:
  cli.run('mtl-report', __doc__, _add_flags, _main, argv)


if __name__ == '__main__':
  run()
