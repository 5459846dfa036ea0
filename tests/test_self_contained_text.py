"""The repository's text stands alone. Results files, docs and docstrings
name paths portably: relative to the repository, or by $MTL_DATA_DIR /
$TMPDIR, never this machine's absolute paths (experiments/harness/
results.py `portable`); and they cite no issue numbers (history is git's)."""

import os
import pathlib
import re
import subprocess
import tempfile

from experiments.harness import results

REPO = pathlib.Path(__file__).resolve().parents[1]
while not (REPO / 'pyproject.toml').is_file():
  REPO = REPO.parent
FOLDERS = ('README.md', 'docs', 'experiments', 'configs', 'launch', 'mtl')


def test_portable_names_the_machine_paths_by_their_variables(monkeypatch):
  monkeypatch.setenv('MTL_DATA_DIR', '/data/shared')
  tmp = tempfile.gettempdir()
  command = (
    f'python {REPO}/experiments/x.py --data=/data/shared/census '
    f'--workdirs={tmp}/runs --out=experiments/results/x'
  )
  assert results.portable(command) == (
    'python experiments/x.py --data=$MTL_DATA_DIR/census '
    '--workdirs=$TMPDIR/runs --out=experiments/results/x'
  )


def _tracked_text(*folders) -> dict:
  """{path: text} of the tracked text files under `folders`, this file
  excepted (it names what it looks for)."""
  tracked = subprocess.run(
    ['git', 'ls-files', *folders],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=True,
  ).stdout.split()
  me = pathlib.Path(__file__).resolve()
  return {
    name: (REPO / name).read_text(errors='replace')
    for name in tracked
    if name.endswith(('.md', '.py', '.json', '.sh', '.sbatch'))
    and (REPO / name).resolve() != me
  }


def test_no_tracked_text_file_holds_an_absolute_path_of_this_machine():
  needles = [str(REPO) + os.sep, '/tmp/', '/work/']
  if os.environ.get('MTL_DATA_DIR'):
    needles.append(os.path.realpath(os.environ['MTL_DATA_DIR']) + os.sep)
  found = []
  for name, text in _tracked_text(*FOLDERS).items():
    # The TPU worker's log folder is a path on that worker, not here.
    text = text.replace('/tmp/mtl-logs/', '')
    found += [f'{name}: {n}' for n in needles if n in text]
  assert not found, found


def test_no_tracked_text_file_cites_an_issue_number():
  pattern = re.compile(r'\b[Ii]ssues? #?\d+')
  found = [
    f'{name}: {m.group(0)}'
    for name, text in _tracked_text(*FOLDERS, 'tests').items()
    # A bug of CPython's own tracker is cited by its number there.
    for m in pattern.finditer(text.replace('CPython issue #', ''))
  ]
  assert not found, found
