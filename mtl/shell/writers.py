"""Where metrics go: metrics.jsonl and Weights & Biases (not the console:
the trainer's own lines are mtl.shell.console's).

Shell code: only process 0 constructs writers (the trainer decides that).
"""

import json
import os
import pathlib
from typing import Any

import numpy as np

from mtl.errors import ConfigError, WorkdirError


def _plain(value: Any):
  """JSON-ready scalars: numpy/jax scalars to float, NaN to None."""
  value = float(np.asarray(value))
  return None if np.isnan(value) else value


class JsonlWriter:
  """Appends one JSON object per logged step: {"step": s, "<name>": v, ...}."""

  def __init__(self, path: pathlib.Path):
    self._path = pathlib.Path(path)
    self._path.parent.mkdir(parents=True, exist_ok=True)
    if self._path.is_dir():  # Found before any step, not at the first log.
      raise WorkdirError(
        f'{self._path} is a directory, expected the metrics file (a JSON '
        'line per logged step)'
      )

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    row = {'step': int(step)}
    row.update({k: _plain(v) for k, v in scalars.items()})
    with self._path.open('a') as f:
      f.write(json.dumps(row) + '\n')

  def close(self) -> None:
    pass


class WandbWriter:
  """One W&B run; `mode` is 'online', 'offline' or 'disabled'.

  Offline runs make no network connection and are written under
  `<workdir>/wandb/`, from where `wandb sync` uploads them later.
  """

  def __init__(self, *, mode: str, workdir: pathlib.Path, config: dict, **kw):
    import wandb  # Imported here: a disabled run should not pay for it.

    os.environ.setdefault('WANDB_DIR', str(workdir))
    os.environ.setdefault('WANDB_CACHE_DIR', str(workdir / 'wandb-cache'))
    self._run = wandb.init(
      mode=mode,
      dir=str(workdir),
      config=config,
      project=kw.get('project'),
      entity=kw.get('entity'),
      group=kw.get('group'),
      name=kw.get('name'),
      tags=list(kw.get('tags') or ()),
      # Several runs at once: a population writes one run per member.
      reinit='create_new',
    )

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    self._run.log({k: _plain(v) for k, v in scalars.items()}, step=int(step))

  def summary(self, values: dict[str, Any]) -> None:
    for k, v in values.items():
      self._run.summary[k] = _plain(v)

  def close(self) -> None:
    self._run.finish()


WANDB_MODES = ('disabled', 'offline', 'online')


class Writers:
  """Fans metrics out to every enabled writer."""

  def __init__(self, workdir: pathlib.Path, *, config: dict, wandb_cfg: dict):
    mode = wandb_cfg.get('mode', 'disabled')
    if mode not in WANDB_MODES:
      raise ConfigError(
        f'wandb.mode is {mode!r}, expected one of {WANDB_MODES}'
      )
    self._writers = [JsonlWriter(workdir / 'metrics.jsonl')]
    self._wandb = None
    if mode != 'disabled':
      kw = {k: v for k, v in wandb_cfg.items() if k != 'mode'}
      self._wandb = WandbWriter(mode=mode, workdir=workdir, config=config, **kw)
      self._writers.append(self._wandb)

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    for w in self._writers:
      w.write(step, scalars)

  def summary(self, values: dict[str, Any]) -> None:
    if self._wandb is not None:
      self._wandb.summary(values)

  def close(self) -> None:
    for w in self._writers:
      w.close()


def read_offline_run(run_dir: pathlib.Path) -> dict:
  """Reads an offline W&B run back from disk: config, group, tags, summary.

  Uses the `wandb leet inspect --json` reader that ships with wandb (the
  Python reader of .wandb files was removed in wandb 0.31), so what comes
  back is what `wandb sync` would upload.
  """
  import subprocess
  import sys

  files = sorted(pathlib.Path(run_dir).glob('*.wandb'))
  if len(files) != 1:
    raise FileNotFoundError(f'{run_dir}: expected one .wandb file, {files}')
  wandb_bin = pathlib.Path(sys.executable).with_name('wandb')
  proc = subprocess.run(
    [str(wandb_bin), 'leet', 'inspect', '--json', str(files[0])],
    capture_output=True,
    text=True,
    check=True,
    timeout=120,
  )
  out = {'config': {}, 'summary': {}, 'history': [], 'group': None}
  for line in proc.stdout.splitlines():
    record = json.loads(line)
    kind = record.get('type')
    if kind == 'run':
      run = record['run']
      out['config'] = run.get('config', {}).get('update', {})
      out['group'] = run.get('run_group')
      out['tags'] = run.get('tags', [])
      out['name'] = run.get('display_name')
    elif kind == 'summary':
      out['summary'].update(record['summary'].get('update', {}))
    elif kind == 'history':
      out['history'].append(record['history']['item'])
    elif kind == 'exit':
      out['exit_code'] = record['exit'].get('exit_code', 0)
  return out
