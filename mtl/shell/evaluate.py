"""`mtl-eval --workdir=W [--checkpoint=best|latest|<step>]
[--split=validation|test|<file>]`: every metric of a trained run's tasks.

Writes <W>/eval_<split>_<checkpoint>.json, the checkpoint named by its step:
'best_step<N>' (checkpoints_best/) or 'step<N>' (checkpoints/); a file split
is named by its stem (eval_<stem>_<checkpoint>.json). An existing file that
holds another evaluation (another file of that stem) is never replaced: the
next free name, eval_<split>_<checkpoint>-2.json, ... is taken. A population
writes one per member under members/<name>/ and a list of them in W.
The metrics results.json reports are computed by the same compiled program
as training's evaluation (the eval step, scanned over the split padded to
eval_batch_size), so for the same checkpoint they are equal to results.json's
bit for bit: `val/auc/<task>` (binned, mtl/core/metrics.py),
`val/logloss/<task>` (the plain BCE, also for a task trained with
pos_weight or a focal loss), `val/mse/<task>` and `val/rmse/<task>` (in the
label's units). On top, from per-row outputs on the host (float64), the
metrics named in the run's config.eval_metrics that apply to each task
(METRICS of mtl/core/metrics_registry.py; by default these, in this order
per task; a run recorded before the key gets the default):

  <p>/xauc/<task>            a regression's or weighted_logistic task's
                             share of same-user pairs with different labels
                             ordered like them, where a user column exists
  <p>/mae/<task>             mean absolute error of a regression (in the
                             trained label space, as its mse)
  <p>/ece/<task>             expected calibration error over 10 equal-width
                             probability bins (mtl/core/calibration.py)
  <p>/predicted_mean/<task>  mean probability; observed_rate: the label mean
  <p>/gauc/<task>            impression-weighted mean of per-user AUCs (users
                             with both classes), where a user column exists

Each classifier task's calibration bins (count, mean prediction, observed
rate) are under 'calibration', whichever metrics are chosen.

The checkpoint defaults to what results.json reports: the best epoch's
(checkpoints_best/) unless select_best is 'last', else the latest; with
'per_task' each task's metrics are those of its own best epoch's params, as
in results.json. Bad input is one line (`mtl-eval: error: ...`, exit 2).
The rows evaluated (a split, or a file encoded as one) and their users:
eval_data.py.
"""

import dataclasses
import itertools
import json
import pathlib

import jax
import numpy as np

from mtl.core import metrics as metrics_lib
from mtl.core import metrics_registry, population, train_step
from mtl.core.calibration import calibration
from mtl.data import pipeline, preprocessing
from mtl.errors import ConfigError
from mtl.shell import cli, eval_data, restore, restored_config
from mtl.shell.json_files import write_json

SPLITS = {'validation': 'val', 'test': 'test'}


def _eval_program(run: restore.Run):
  """The trainer's evaluation program (engines.Single / Population)."""
  step = train_step.make_eval_step(
    run.model, run.tasks, num_bins=run.settings.num_auc_bins
  )
  scanned = train_step.make_scanned_eval(
    step, batch_size=run.settings.eval_batch_size
  )
  if run.is_population:
    scanned = population.make_population_eval(scanned)
  return jax.jit(scanned)


def _logits(run: restore.Run, params, split: dict, per_task=False):
  """Per-row logits [K, T, N] (each task on its head row)."""
  fn = restore.make_outputs(run, logits=True, per_task=per_task)
  if run.is_population:
    fn = jax.vmap(fn, in_axes=(0, None, None))
  else:
    fn = (lambda f: lambda p, d, s: f(p, d, s)[None])(fn)
  fn = jax.jit(fn)
  b = run.settings.eval_batch_size
  n = split['labels'].shape[1]
  padded = pipeline.pad_split(split, b)
  out = [
    np.asarray(
      fn(params, padded['dense'][i : i + b], padded['sparse'][i : i + b])
    )
    for i in range(0, padded['dense'].shape[0], b)
  ]
  return np.concatenate(out, axis=2)[:, :, :n].astype(np.float64)


def host_metrics(
  run, logits, split, prefix, users=None, names=metrics_registry.DEFAULT
) -> tuple[dict, dict]:
  """(scalars, calibration tables) of one member's logits [T, N]: the
  metrics `names` (mtl.core.metrics_registry) that apply to each task."""
  scalars, tables = {}, {}
  for t, task in enumerate(run.tasks):
    keep = split['mask'][t] > 0
    z, y = logits[t][keep], split['labels'][t][keep].astype(np.float64)
    if not keep.any():
      continue
    if task.kind != 'regression':
      tables[task.name] = calibration(metrics_registry.sigmoid(z), y)
    found = metrics_registry.task_metrics(
      names, task.kind, y, z, None if users is None else users[keep]
    )
    for name, value in found.items():
      scalars[f'{prefix}/{name}/{task.name}'] = value
  return scalars, tables


def label_stds(run: restore.Run) -> tuple:
  """The run's tasks with the std each regression's label was divided by
  (a table's `scale: 'standard'`; preprocessing.json's label moments), so
  that rmse is in the label's units, as the trainer's results.json."""
  _, scale, _, _ = restore.output_transform(run)
  return tuple(
    dataclasses.replace(t, label_std=float(scale[i]))
    if t.kind == 'regression'
    else t
    for i, t in enumerate(run.tasks)
  )


def file_stem(name: str, where: dict) -> str:
  """'eval_<split>_best_step<N>' or 'eval_<split>_step<N>': which split
  and which checkpoint (checkpoints_best/ or checkpoints/) was evaluated."""
  best = pathlib.Path(where['checkpoint']).name == 'checkpoints_best'
  return f'eval_{name}_{"best_" if best else ""}step{where["step"]}'


def _text(value: dict) -> str:
  return json.dumps(value, indent=2, sort_keys=True) + '\n'  # write_json's


def write_new(files: list[tuple[pathlib.Path, str, dict]]) -> list:
  """Writes each (directory, stem, value) to <directory>/<stem>.json, or,
  when any of them holds another evaluation, all to the first free
  <stem>-<i>.json (i = 2, 3, ...): an existing file is only ever rewritten
  with the same contents. Returns the paths written."""
  for i in itertools.count(1):
    end = '.json' if i == 1 else f'-{i}.json'
    paths = [d / (stem + end) for d, stem, _ in files]
    if all(
      not q.exists() or q.read_text() == _text(v)
      for q, (_, _, v) in zip(paths, files, strict=True)
    ):
      for q, (_, _, v) in zip(paths, files, strict=True):
        write_json(q, v)
      return paths
  raise AssertionError('unreachable')


def evaluate(workdir, *, checkpoint='default', split='validation') -> dict:
  """Evaluates a workdir's checkpoint on a split; writes and returns it."""
  workdir = pathlib.Path(workdir)
  config = restored_config.read_config(workdir)
  # config.eval_metrics (a run recorded before the key: the default),
  # checked against the registry before any work.
  names = restored_config.eval_settings(config).eval_metrics
  metrics_registry.check_names(names)
  artefact = preprocessing.load(workdir)
  if split not in SPLITS and not pathlib.Path(split).is_file():
    raise ConfigError(
      f'--split is {split!r}, expected validation, test or a file of '
      'labelled rows (CSV, TSV or Parquet)'
    )
  if split in SPLITS and artefact is None:
    dataset = restored_config.load_dataset(config)
    run = restore.open_run(workdir, dataset=dataset)
  else:
    dataset, run = None, restore.open_run(workdir)
  restore.choose(run, checkpoint)  # No checkpoint: fail before the data.
  if split in SPLITS:
    dataset = dataset or restored_config.load_dataset(config)
    eval_data.check_layout(run.artefact, dataset)
    data, prefix, name = dataset.splits[split], SPLITS[split], split
  else:
    path = pathlib.Path(split)
    data = eval_data.read_file(run, path)
    prefix, name = 'eval', path.name.split('.')[0]
  params, where = restore.restore_params(run, checkpoint)
  padded = pipeline.pad_split(data, run.settings.eval_batch_size)
  per_task = where.get('per_task', False)  # select_best 'per_task'
  counts = restore.eval_counts(
    run, _eval_program(run), params, jax.device_put(padded), per_task=per_task
  )
  if not run.is_population:
    counts = jax.tree.map(lambda x: np.asarray(x)[None], counts)
  logits = _logits(run, params, data, per_task)
  users = eval_data.users_of(run, data)
  results, tasks = [], label_stds(run)
  for j, m in enumerate(run.members):
    metrics = metrics_lib.summarize_eval(
      jax.tree.map(lambda x, j=j: x[j], counts), tasks, prefix
    )
    extra, tables = host_metrics(run, logits[j], data, prefix, users, names)
    out = {
      'workdir': str(workdir),
      'member': m['name'],
      'split': split,
      'rows': int(data['labels'].shape[1]),
      **where,
      'metrics': {**metrics, **extra},
      'calibration': tables,
    }
    results.append(out)
  stem = file_stem(name, where)
  files = [(restore.member_dir(run, j), stem, r) for j, r in enumerate(results)]
  if run.is_population:
    summary = {'split': split, **where, 'members': results}
    files.append((workdir, stem, summary))
  paths = write_new(files)
  out = summary if run.is_population else results[0]
  return {**out, 'file': str(paths[-1])}


def _add_flags(p) -> None:
  p.add_argument('--workdir', required=True, help='A trained run directory.')
  p.add_argument(
    '--checkpoint',
    default='default',
    help='best, latest or a step (default: what results.json reports)',
  )
  p.add_argument(
    '--split',
    default='validation',
    help='validation, test, or a CSV/TSV/Parquet file of labelled rows',
  )


def _main(args) -> None:
  out = evaluate(args.workdir, checkpoint=args.checkpoint, split=args.split)
  for r in out.get('members', [out]):
    shown = {k: v for k, v in r['metrics'].items() if v is not None}
    who = f'{r["member"]}  ' if r['member'] else ''
    print(who + '  '.join(f'{k} {v:.4f}' for k, v in shown.items()), flush=True)
  print(f'wrote {out["file"]}', flush=True)


def run(argv=None) -> None:
  cli.run('mtl-eval', __doc__, _add_flags, _main, argv)


if __name__ == '__main__':
  run()
