"""Writes an experiment's results: <stem>.json, <stem>.md, <stem>*.png.

`write_results(name, record, markdown)` is what every script calls: the
record as JSON (atomically), the markdown followed by a provenance line (the
command that produced it, the date, the commit and the machine), and any
matplotlib figures. The stem is experiments/results/<name> unless --out
names another (a directory, a stem, or a file whose suffix is dropped).
"""

import datetime
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS = REPO / 'experiments' / 'results'
SUFFIXES = ('.json', '.md', '.png')


def results_stem(name: str, out=None) -> pathlib.Path:
  """experiments/results/<name>, or where --out says."""
  if not out:
    return RESULTS / name
  out = pathlib.Path(out)
  if out.is_dir():
    return out / name
  return out.with_suffix('') if out.suffix in SUFFIXES else out


def _with(stem: pathlib.Path, suffix: str) -> pathlib.Path:
  return stem.with_name(stem.name + suffix)


def _atomic_write(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
  tmp.write_text(text)
  tmp.replace(path)


def write_json(path, value) -> None:
  """JSON (indent 2), atomically: a crash never leaves half a file."""
  _atomic_write(pathlib.Path(path), json.dumps(value, indent=2) + '\n')


def portable(text: str) -> str:
  """`text` without this machine's absolute paths: the repository's become
  relative to it, $MTL_DATA_DIR's and the temporary directory's are named by
  their variables."""
  places = [(str(REPO) + os.sep, '')]
  if os.environ.get('MTL_DATA_DIR'):
    data = os.path.realpath(os.environ['MTL_DATA_DIR'])
    places += [
      (data, '$MTL_DATA_DIR'),
      (os.environ['MTL_DATA_DIR'], '$MTL_DATA_DIR'),
    ]
  places.append((tempfile.gettempdir(), '$TMPDIR'))
  for path, name in places:
    text = text.replace(path, name)
  return text


def command_line() -> str:
  """The command that is running, as the user would retype it from the
  repository's root (portable: no absolute paths of this machine)."""
  script = pathlib.Path(sys.argv[0])
  try:
    script = script.resolve().relative_to(REPO)
  except ValueError:
    pass
  return portable(shlex.join(['python', str(script), *sys.argv[1:]]))


def _git(*args) -> subprocess.CompletedProcess | None:
  try:
    return subprocess.run(
      ['git', *args], cwd=REPO, capture_output=True, text=True, timeout=20
    )
  except (OSError, subprocess.SubprocessError):
    return None


def _commit() -> str:
  """HEAD's short hash, '+ changes' if the tracked files differ from it."""
  head = _git('rev-parse', '--short', 'HEAD')
  if head is None or head.returncode or not head.stdout.strip():
    return 'unknown'
  dirty = _git('diff', '--quiet', 'HEAD', '--', '.')
  changed = dirty is not None and dirty.returncode == 1
  return head.stdout.strip() + (' + uncommitted changes' if changed else '')


def machine_facts() -> dict:
  """Where the numbers were made: machine, cores, load, Python, JAX."""
  facts = {
    'machine': platform.machine(),
    'cpus': os.cpu_count(),
    'python': platform.python_version(),
  }
  if hasattr(os, 'getloadavg'):
    facts['load_average'] = round(os.getloadavg()[0], 2)
  jax = sys.modules.get('jax')
  if jax is not None:  # Only if the script used JAX: never start it here.
    facts['jax'] = jax.__version__
    facts['backend'] = jax.default_backend()
    facts['devices'] = jax.local_device_count()
  return facts


def provenance() -> str:
  """One markdown line: command, UTC date, commit, machine facts."""
  f = machine_facts()
  date = datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')
  machine = f'{f["machine"]}, {f["cpus"]} CPUs'
  if 'load_average' in f:
    machine += f' (load {f["load_average"]:g})'
  machine += f', Python {f["python"]}'
  if 'jax' in f:
    machine += f', jax {f["jax"]} ({f["backend"]}, {f["devices"]} device(s))'
  return (
    f'Produced by `{command_line()}` on {date}, commit {_commit()}; {machine}.'
  )


def markdown_table(header, rows, align=None) -> list[str]:
  """Lines of a markdown table; align: one of 'l', 'r' per column."""
  align = align or 'l' * len(header)
  sep = {'l': '---', 'r': '---:'}
  return [
    '| ' + ' | '.join(map(str, header)) + ' |',
    '|' + '|'.join(sep[a] for a in align) + '|',
    *('| ' + ' | '.join(map(str, r)) + ' |' for r in rows),
  ]


def write_markdown(path, markdown) -> str:
  """The markdown (a string or lines) and the provenance line, atomically."""
  if not isinstance(markdown, str):
    markdown = '\n'.join(markdown)
  text = markdown.rstrip('\n') + '\n\n' + provenance() + '\n'
  _atomic_write(pathlib.Path(path), text)
  return text


def pyplot():
  """matplotlib.pyplot with the Agg backend (no display needed)."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  return plt


def save_figure(path, fig, dpi: int = 110) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.stem}.tmp{os.getpid()}{path.suffix}')
  fig.savefig(tmp, dpi=dpi)
  tmp.replace(path)
  pyplot().close(fig)


def write_results(
  name: str,
  record,
  markdown=None,
  *,
  out=None,
  figures=None,
  dpi: int = 110,
  echo: bool = True,
) -> pathlib.Path:
  """Writes <stem>.json, <stem>.md and <stem><suffix>.png; returns the stem.

  Args:
    name: the results' name: experiments/results/<name>.* by default.
    record: what <stem>.json holds (None: no JSON).
    markdown: the .md's body, a string or lines (None: no .md); the
      command, date and machine are appended.
    out: --out: a directory, a stem, or a path whose suffix is dropped.
    figures: a matplotlib Figure (<stem>.png) or {suffix: Figure}
      (<stem><suffix>.png, e.g. {'_loss': fig}).
    dpi: of the figures.
    echo: print the markdown and where it went.
  """
  stem = results_stem(name, out)
  if record is not None:
    write_json(_with(stem, '.json'), record)
  if markdown is not None:
    text = write_markdown(_with(stem, '.md'), markdown)
    if echo:
      print(text, end='')
  if figures is not None:
    if not isinstance(figures, dict):
      figures = {'': figures}
    for suffix, fig in figures.items():
      save_figure(_with(stem, f'{suffix}.png'), fig, dpi)
  if echo:
    print(f'wrote {stem}.*', flush=True)
  return stem
