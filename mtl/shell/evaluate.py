"""`mtl-eval --workdir=W [--checkpoint=best|latest|<step>]
[--split=validation|test|<file>]`: every metric of a trained run's tasks.

Writes <W>/eval_<split>.json (a file split: eval_<file stem>.json; a
population: one per member under members/<name>/ and a list of them in W).
The metrics results.json reports are computed by the same compiled program
as training's evaluation (the eval step, scanned over the split padded to
eval_batch_size), so for the same checkpoint they are equal to results.json's
bit for bit: `val/auc/<task>` (binned, mtl/core/metrics.py),
`val/logloss/<task>`, `val/mse/<task>`. On top, from per-row outputs on the
host (float64):

  <p>/gauc/<task>            impression-weighted mean of per-user AUCs (users
                             with both classes), where a user column exists
  <p>/ece/<task>             expected calibration error over 10 equal-width
                             probability bins; the bins themselves (count,
                             mean prediction, observed rate) under
                             'calibration'
  <p>/predicted_mean/<task>  mean probability; observed_rate: the label mean
  <p>/mae/<task>             mean absolute error of a regression (in the
                             trained label space, as its mse)

The checkpoint defaults to what results.json reports: the best epoch's
(checkpoints_best/) when select_best, else the latest. Bad input is one line
(`mtl-eval: error: ...`, exit 2).
"""

import pathlib

import jax
import numpy as np

from mtl.core import metrics as metrics_lib
from mtl.core import population, ranking_metrics, train_step
from mtl.core.architectures import ARCHITECTURES
from mtl.core.tasks import Task
from mtl.data import pipeline, preprocessing
from mtl.data import schema as sc
from mtl.data.dataset import Dataset
from mtl.errors import ConfigError, DataError
from mtl.shell import cli, restore
from mtl.shell.workdir import write_json

SPLITS = {'validation': 'val', 'test': 'test'}
CALIBRATION_BINS = 10


def _check_layout(artefact: dict, dataset) -> None:
  found = (list(dataset.dense_names), list(dataset.sparse_names))
  if found != (artefact['dense_names'], artefact['sparse_names']) or [
    int(v) for v in dataset.vocab_sizes
  ] != [int(v) for v in preprocessing.vocab_sizes(artefact)]:
    raise DataError(
      f'dataset {dataset.name!r} no longer has the inputs the run trained on '
      '(preprocessing.json: columns or vocabulary sizes differ), expected '
      'the same prepared data'
    )


def read_file(run: restore.Run, path: pathlib.Path) -> dict:
  """A labelled file of raw rows encoded as a split (in memory)."""
  enc = preprocessing.Encoder(run.artefact)
  source = enc.source(path)
  enc.check_columns(source.columns(), path, labels=True)
  parts = []
  for start, chunk in source.chunks(65536, source.columns()):
    y, m = enc.labels_of(chunk, start, path)
    parts.append({**enc.features(chunk, start, path), 'labels': y, 'mask': m})
  if not parts:
    raise DataError(f'{path}: has no data rows, expected some')
  split = {
    k: np.concatenate(
      [p[k] for p in parts], axis=1 if k in ('labels', 'mask') else 0
    )
    for k in parts[0]
  }
  if enc.kind != 'table':
    return split
  source_tasks = tuple(Task(t.name, t.kind, t.weight) for t in enc.schema.tasks)
  if [t.name for t in source_tasks] == [t.name for t in run.tasks]:
    return split
  # An entire-space model re-targets the tasks (ESMM: click, ctcvr, ...).
  ds = Dataset(
    name=str(path),
    tasks=source_tasks,
    dense_names=tuple(run.artefact['dense_names']),
    sparse_names=tuple(run.artefact['sparse_names']),
    vocab_sizes=preprocessing.vocab_sizes(run.artefact),
    splits={s: split for s in ('train', 'validation', 'test')},
  )
  return ARCHITECTURES[run.config.model_name].adapt_dataset(ds).splits['train']


def _eval_program(run: restore.Run):
  """The trainer's evaluation program (engines.Single / Population)."""
  step = train_step.make_eval_step(
    run.model, run.tasks, num_bins=run.config.num_auc_bins
  )
  scanned = train_step.make_scanned_eval(
    step, batch_size=run.config.eval_batch_size
  )
  if run.is_population:
    scanned = population.make_population_eval(scanned)
  return jax.jit(scanned)


def _logits(run: restore.Run, params, split: dict) -> np.ndarray:
  """Per-row logits [K, T, N] (each task on its head row)."""
  fn = restore.make_outputs(run, logits=True)
  if run.is_population:
    fn = jax.vmap(fn, in_axes=(0, None, None))
  else:
    fn = (lambda f: lambda p, d, s: f(p, d, s)[None])(fn)
  fn = jax.jit(fn)
  b = run.config.eval_batch_size
  n = split['labels'].shape[1]
  padded = pipeline.pad_split(split, b)
  out = [
    np.asarray(
      fn(params, padded['dense'][i : i + b], padded['sparse'][i : i + b])
    )
    for i in range(0, padded['dense'].shape[0], b)
  ]
  return np.concatenate(out, axis=2)[:, :, :n].astype(np.float64)


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def calibration(p, y, bins: int = CALIBRATION_BINS) -> list[dict]:
  """Equal-width probability bins: count, mean prediction, observed rate."""
  idx = np.minimum((p * bins).astype(int), bins - 1)
  out = []
  for b in range(bins):
    sel = idx == b
    n = int(sel.sum())
    out.append(
      {
        'low': b / bins,
        'high': (b + 1) / bins,
        'count': n,
        'mean_prediction': float(p[sel].mean()) if n else None,
        'observed_rate': float(y[sel].mean()) if n else None,
      }
    )
  return out


def host_metrics(run, logits, split, prefix, users=None) -> tuple[dict, dict]:
  """(scalars, calibration tables) of one member's logits [T, N]."""
  scalars, tables = {}, {}
  for t, task in enumerate(run.tasks):
    keep = split['mask'][t] > 0
    z, y = logits[t][keep], split['labels'][t][keep].astype(np.float64)
    if not keep.any():
      continue
    if task.kind == 'regression':
      scalars[f'{prefix}/mae/{task.name}'] = ranking_metrics.mae(y, z)
      continue
    p = _sigmoid(z)
    bins = calibration(p, y)
    tables[task.name] = bins
    scalars[f'{prefix}/ece/{task.name}'] = float(
      sum(
        b['count'] * abs(b['mean_prediction'] - b['observed_rate'])
        for b in bins
        if b['count']
      )
      / len(p)
    )
    scalars[f'{prefix}/predicted_mean/{task.name}'] = float(p.mean())
    scalars[f'{prefix}/observed_rate/{task.name}'] = float(y.mean())
    if users is not None:
      g = ranking_metrics.gauc(y, p, users[keep])
      scalars[f'{prefix}/gauc/{task.name}'] = None if np.isnan(g) else g
  return scalars, tables


def evaluate(workdir, *, checkpoint='default', split='validation') -> dict:
  """Evaluates a workdir's checkpoint on a split; writes and returns it."""
  workdir = pathlib.Path(workdir)
  config = restore._config(workdir)
  artefact = preprocessing.load(workdir)
  if split not in SPLITS and not pathlib.Path(split).is_file():
    raise ConfigError(
      f'--split is {split!r}, expected validation, test or a file of '
      'labelled rows (CSV, TSV or Parquet)'
    )
  if split in SPLITS and artefact is None:
    dataset = restore.load_dataset(config)
    run = restore.open_run(workdir, dataset=dataset)
  else:
    dataset, run = None, restore.open_run(workdir)
  restore.choose(run, checkpoint)  # No checkpoint: fail before the data.
  if split in SPLITS:
    dataset = dataset or restore.load_dataset(config)
    _check_layout(run.artefact, dataset)
    data, prefix, name = dataset.splits[split], SPLITS[split], split
  else:
    path = pathlib.Path(split)
    data, prefix, name = read_file(run, path), 'eval', path.name.split('.')[0]
  params, where = restore.restore_params(run, checkpoint)
  padded = pipeline.pad_split(data, run.config.eval_batch_size)
  counts = jax.device_get(_eval_program(run)(params, jax.device_put(padded)))
  if not run.is_population:
    counts = jax.tree.map(lambda x: np.asarray(x)[None], counts)
  logits = _logits(run, params, data)
  user = preprocessing.user_feature(run.artefact)
  users = (
    None
    if user is None
    else data['sparse'][:, run.artefact['sparse_names'].index(user)]
  )
  if user is not None and run.artefact['kind'] == 'table':
    users = np.where(users == sc.OOV_ID, -1 - np.arange(len(users)), users)
  results = []
  for j, m in enumerate(run.members):
    metrics = metrics_lib.summarize_eval(
      jax.tree.map(lambda x, j=j: x[j], counts), run.tasks, prefix
    )
    extra, tables = host_metrics(run, logits[j], data, prefix, users)
    out = {
      'workdir': str(workdir),
      'member': m['name'],
      'split': split,
      'rows': int(data['labels'].shape[1]),
      **where,
      'metrics': {**metrics, **extra},
      'calibration': tables,
    }
    write_json(restore.member_dir(run, j) / f'eval_{name}.json', out)
    results.append(out)
  if run.is_population:
    summary = {'split': split, **where, 'members': results}
    write_json(workdir / f'eval_{name}.json', summary)
    return summary
  return results[0]


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


def run(argv=None) -> None:
  cli.run('mtl-eval', __doc__, _add_flags, _main, argv)


if __name__ == '__main__':
  run()
