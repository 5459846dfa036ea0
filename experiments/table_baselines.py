"""Tuned logistic regression and a gradient-boosted tree on a config's split.

  python experiments/table_baselines.py --config=configs/kuairand.py
  python experiments/table_baselines.py --config=configs/census.py:mmoe \\
      --config.dataset.protocol=library [--seeds=3]

The config is parsed as mtl-train parses it (file, argument, --config.<key>
overrides) and loaded by mtl's own loader (`build.load_dataset`, with the
architecture's `adapt_dataset`): the rows, labels, masks and scaled
regression labels are the ones mtl-train trains and evaluates on. For each
trained task, on its masked rows only:

- prior: the training rate or mean; rate: a categorical id's smoothed
  training rate, (sum + 10 prior) / (count + 10), prior where unseen (the
  feature best on validation is shown);
- logistic regression (liblinear; ridge for regression, alpha = 1 / C) on
  one-hot ids (each column's whole vocabulary), each sequence feature as a
  multi-hot of the ids it holds (padding 0 left out) divided by their
  number (the model's mean pooling), and the loader's dense columns. Fit
  on train for each C of --c_grid; the C best on validation is chosen and
  its test metric reported (no refit on train + validation: mtl-train also
  trains on train and selects on validation);
- GBDT: HistGradientBoosting{Classifier,Regressor} on the dense columns; an
  id column of at most 255 ids as a native categorical feature, a larger
  one as its target statistic and its training count. A training row's
  statistic is CatBoost's ordered target statistic (Prokhorenkova et al.,
  "CatBoost: unbiased boosting with categorical features", NeurIPS 2018):
  over a seeded random permutation of the training rows, (sum + 10 prior) /
  (count + 10) of the id's strictly earlier rows, so a row never sees its
  own label; validation and test rows get the whole training split's. A
  sequence feature gives the GBDT its length only (its ids are the
  logistic regression's). Learning rate x max_leaf_nodes and the number of
  iterations (every --gbdt_stride up to --gbdt_max_iter: early stopping)
  are chosen on validation; --seeds=N repeats it with permutation and
  random_state 0..N-1 (mean +- std). Fits use --threads (1: a shared box).

Metrics: test AUC for binary tasks (weighted_logistic: label > 0.5, as
mtl-train's AUC); MSE (and RMSE) in the task's training units, mtl-train's
mse/<task>. One line a task is printed; results are kept per --name
(default: the dataset's name and protocol) in
experiments/results/table_baselines.{json,md}.
"""

import fcntl
import itertools
import json
import os
import pathlib
import sys
import tempfile

import numpy as np
import pandas as pd
import threadpoolctl
from absl import app, flags, logging
from ml_collections import config_flags
from scipy import sparse
from sklearn import ensemble
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.harness import results as results_lib  # noqa: E402
from mtl.core.layers import embedding  # noqa: E402
from mtl.errors import MtlError  # noqa: E402
from mtl.shell import config_file  # noqa: E402

FLAGS = flags.FLAGS
OUT = REPO / 'experiments' / 'results' / 'table_baselines'


def _define_flags() -> None:
  """The command line's flags (defined when run as a script only)."""
  config_flags.DEFINE_config_file('config', None, 'An mtl config.')
  flags.DEFINE_integer('seeds', 1, 'GBDT seeds 0..N-1.')
  flags.DEFINE_string('name', None, 'Results key (default: the dataset).')
  flags.DEFINE_string('out', str(OUT), '<stem>.json, .md: one entry a name.')
  flags.DEFINE_list('c_grid', '1e-3,1e-2,1e-1,1,10,100', 'Inverse L2 grid.')
  flags.DEFINE_list('gbdt_learning_rates', '0.05,0.2', 'GBDT grid.')
  flags.DEFINE_list('gbdt_leaves', '15,63', 'max_leaf_nodes grid.')
  flags.DEFINE_integer('gbdt_max_iter', 300, 'GBDT iterations at most.')
  flags.DEFINE_integer('gbdt_stride', 5, 'Iterations between checks.')
  flags.DEFINE_integer('threads', 1, 'OpenMP / BLAS threads of the fits.')
  flags.mark_flag_as_required('config')


SMOOTH = 10.0
NATIVE_MAX = 255  # HistGradientBoosting's native categories: ids < 255.
SPLITS = ('train', 'validation', 'test')


def ordered_target_encoding(ids, y, prior, order, smooth=SMOOTH):
  """CatBoost's ordered target statistic of each row (Prokhorenkova et al.,
  NeurIPS 2018): the smoothed mean of y over the rows with the same id that
  come strictly earlier in `order` (a permutation of the rows)."""
  ids, y, order = np.asarray(ids), np.asarray(y, float), np.asarray(order)
  frame = pd.DataFrame({'k': ids[order], 'y': y[order]})
  by_id = frame.groupby('k', sort=False)
  # Sums of each id's strictly earlier rows, summed within the id only.
  total = by_id.y.cumsum().groupby(frame.k).shift(1, fill_value=0.0)
  count = by_id.cumcount().to_numpy()
  enc = (total.to_numpy() + smooth * prior) / (count + smooth)
  return enc[np.argsort(order)]  # Back from the permutation's order.


def target_statistic(train_ids, train_y, ids, prior, smooth=SMOOTH):
  """The smoothed training mean of y per id, for `ids`; prior if unseen."""
  g = pd.DataFrame({'k': train_ids, 'y': train_y}).groupby('k').y
  rate = (g.sum() + smooth * prior) / (g.count() + smooth)
  return pd.Series(ids).map(rate).fillna(prior).to_numpy(float)


def feature_groups(dataset):
  """[(feature, start, stop, is_sequence)] of the dataset's sparse columns."""
  sizes = tuple(dataset.vocab_sizes)
  if any(isinstance(v, embedding.Column) for v in sizes):
    groups, _ = embedding.feature_groups(sizes, 1)
    return [(f, a, b, p is not None) for f, _, p, a, b in groups]
  return [
    (name, s, s + 1, False) for s, name in enumerate(dataset.sparse_names)
  ]


def one_hot(dataset, split):
  """[N, sum(vocab) + F] csr: one-hot ids, multi-hot sequences, dense."""
  arrays = dataset.splits[split]
  ids, n = arrays['sparse'], arrays['dense'].shape[0]
  blocks = []
  for _, start, stop, is_sequence in feature_groups(dataset):
    rows = np.repeat(np.arange(n), stop - start)
    cols = ids[:, start:stop].reshape(-1)
    keep = cols != embedding.PAD_ID if is_sequence else np.ones_like(cols, bool)
    m = sparse.csr_matrix(
      (np.ones(keep.sum()), (rows[keep], cols[keep])),
      shape=(n, int(dataset.vocab_sizes[start])),
    )
    m.sum_duplicates()
    m.data[:] = 1.0  # Multi-hot: an id held twice is one; then mean-pooled.
    held = np.maximum(np.asarray(m.sum(1)).ravel(), 1.0)
    blocks.append(sparse.diags(1.0 / held) @ m if is_sequence else m)
  blocks.append(sparse.csr_matrix(arrays['dense'].astype(float)))
  return sparse.hstack(blocks).tocsr()


def score(kind, y, p) -> float:
  """AUC (binary) or MSE (regression); nan for a one-class split."""
  if kind == 'binary':
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else np.nan
  return float(np.mean((y - p) ** 2))


def better(kind, a, b) -> bool:
  """Is validation metric a better than b (nan never is)?"""
  if np.isnan(a):
    return False
  return np.isnan(b) or (a > b if kind == 'binary' else a < b)


def task_data(dataset, t):
  """{split: (row index, y)} of task t's masked rows; y binary or not."""
  task, out = dataset.tasks[t], {}
  for split in SPLITS:
    arrays = dataset.splits[split]
    rows = np.flatnonzero(arrays['mask'][t] > 0)
    y = arrays['labels'][t][rows].astype(float)
    if task.kind == 'weighted_logistic':
      y = (y > 0.5).astype(float)  # mtl-train's AUC of such a task.
    out[split] = rows, y
  return out


def fit_linear(kind, x, data, c_grid) -> dict:
  """Logistic regression (ridge) per C on train; the validation-best C."""
  (tr, ytr), (va, yva), (te, yte) = (data[s] for s in SPLITS)
  grid, best = {}, None
  for c in c_grid:
    if kind == 'binary':
      model = LogisticRegression(C=c, solver='liblinear', random_state=0)
    else:
      model = Ridge(alpha=1.0 / c)
    model.fit(x['train'][tr], ytr)
    predict = model.decision_function if kind == 'binary' else model.predict
    val = grid[repr(c)] = score(kind, yva, predict(x['validation'][va]))
    if best is None or better(kind, val, best[1]):
      best = (c, val, predict(x['test'][te]))
  c, val, test_pred = best
  return {'C': c, 'validation': val, 'test': score(kind, yte, test_pred)}, grid


def gbdt_inputs(dataset, data, seed):
  """{split: [n, F] features}, categorical mask: see the module docstring."""
  tr, ytr = data['train']
  order = np.random.default_rng(seed).permutation(len(tr))
  cols = {s: [dataset.splits[s]['dense'][data[s][0]]] for s in SPLITS}
  categorical = [False] * len(dataset.dense_names)
  for _, start, stop, is_sequence in feature_groups(dataset):
    ids = {
      s: dataset.splits[s]['sparse'][r, start:stop]
      for s, (r, _) in data.items()
    }
    size = dataset.vocab_sizes[start]
    if is_sequence or size <= NATIVE_MAX:
      for s in SPLITS:
        length = (ids[s] != embedding.PAD_ID).sum(1, keepdims=True)
        cols[s].append(length if is_sequence else ids[s])
      categorical.append(not is_sequence)
      continue
    seen = np.bincount(
      dataset.splits['train']['sparse'][:, start], minlength=size
    )
    i = {s: v[:, 0] for s, v in ids.items()}
    for s in SPLITS:
      te = (
        ordered_target_encoding(i[s], ytr, ytr.mean(), order)
        if s == 'train'
        else target_statistic(i['train'], ytr, i[s], ytr.mean())
      )
      cols[s].append(np.stack([te, seen[i[s]]], 1))
    categorical += [False, False]
  return {s: np.hstack(cols[s]).astype(float) for s in SPLITS}, categorical


def fit_gbdt(kind, dataset, data, seed, lrs, leaves, max_iter, stride):
  """The validation-best (learning rate, leaves, iterations) of a seed."""
  x, categorical = gbdt_inputs(dataset, data, seed)
  ys = {s: data[s][1] for s in SPLITS}
  cls = ensemble.HistGradientBoostingClassifier
  if kind == 'regression':
    cls = ensemble.HistGradientBoostingRegressor
  best = {'validation': np.nan}
  for lr, leaf in itertools.product(lrs, leaves):
    model = cls(
      learning_rate=lr,
      max_leaf_nodes=leaf,
      max_iter=max_iter,
      early_stopping=False,
      categorical_features=np.asarray(categorical),
      random_state=seed,
    ).fit(x['train'], ys['train'])
    staged = getattr(
      model,
      'staged_predict' if kind == 'regression' else 'staged_decision_function',
    )
    stages = zip(staged(x['validation']), staged(x['test']), strict=True)
    for it, (pv, pt) in enumerate(stages, 1):
      if it % stride and it != max_iter:
        continue
      val = score(kind, ys['validation'], pv)
      if better(kind, val, best['validation']):
        test = score(kind, ys['test'], pt)
        best = dict(learning_rate=lr, max_leaf_nodes=leaf, iterations=it)
        best.update(validation=val, test=test)
  return best


def baselines(dataset, *, c_grid, seeds=1, gbdt=None, echo=None) -> dict:
  """{task: {'metric', 'prior', 'rates', 'logistic', 'gbdt'}} per trained
  task of the dataset; gbdt: fit_gbdt's keywords (None: no GBDT), fitted
  with seeds 0..seeds-1; echo(task, result) as each task ends."""
  x = {s: one_hot(dataset, s) for s in SPLITS}
  out = {}
  for t, task in enumerate(dataset.tasks):
    if not task.train:
      continue
    kind = 'regression' if task.kind == 'regression' else 'binary'
    data = task_data(dataset, t)
    ytr = data['train'][1]
    prior = ytr.mean()
    r = {'metric': 'auc' if kind == 'binary' else 'mse', 'rates': {}}
    flat = {s: np.full(len(y), prior) for s, (_, y) in data.items()}
    r['prior'] = {s: score(kind, data[s][1], flat[s]) for s in SPLITS[1:]}
    for name, start, _, _ in (g for g in feature_groups(dataset) if not g[3]):
      ids = {s: dataset.splits[s]['sparse'][data[s][0], start] for s in data}
      p = {s: target_statistic(ids['train'], ytr, ids[s], prior) for s in ids}
      r['rates'][name] = {s: score(kind, data[s][1], p[s]) for s in SPLITS[1:]}
    r['logistic'], r['logistic_grid'] = fit_linear(kind, x, data, c_grid)
    if gbdt is not None:
      runs = [fit_gbdt(kind, dataset, data, s, **gbdt) for s in range(seeds)]
      tests = [run['test'] for run in runs]
      std = float(np.std(tests, ddof=1)) if seeds > 1 else 0.0
      r['gbdt'] = dict(test=float(np.mean(tests)), test_std=std, seeds=runs)
    out[task.name] = r
    if echo:
      echo(task.name, r)
  return out


def _cell(r, m) -> str:
  text = f'{m["test"]:.4f}'
  if r['metric'] == 'mse':
    text += f' ({np.sqrt(m["test"]):.4f})'
  return text + (f' +- {m["test_std"]:.4f}' if m.get('test_std') else '')


def _row(task, r) -> list[str]:
  sign, rate = (1 if r['metric'] == 'auc' else -1), ''
  if r['rates']:
    val = {k: sign * m['validation'] for k, m in r['rates'].items()}
    best = max(val, key=lambda k: np.nan_to_num(val[k], nan=-np.inf))
    rate = f'{_cell(r, r["rates"][best])} ({best})'
  lin = f'{_cell(r, r["logistic"])} (C={r["logistic"]["C"]:g})'
  g = r['gbdt']['seeds'][0] if 'gbdt' in r else None
  tree = _cell(r, r['gbdt']) if g else ''
  if g:
    tree += f' (lr {g["learning_rate"]:g}, {g["max_leaf_nodes"]} leaves, '
    tree += f'{g["iterations"]} it.)'
  return [task, r['metric'], _cell(r, r['prior']), rate, lin, tree]


def markdown(record: dict) -> list[str]:
  lines = [
    "# Baselines on mtl configs' own splits",
    '',
    "Test AUC, or MSE (RMSE) in the task's training units; logistic / ridge"
    ' with C chosen on validation; GBDT with learning rate, leaves and'
    " iterations chosen on validation (seed 0's choice shown; +- std over"
    ' seeds). How: experiments/table_baselines.py.',
  ]
  header = ['task', 'test', 'prior', 'id rate', 'logistic / ridge', 'GBDT']
  for name, entry in record.items():
    n = entry['rows']
    lines.append(
      f'\n### {name}\n\n`{entry["command"]}`; rows train / validation / '
      f'test {n["train"]:,} / {n["validation"]:,} / {n["test"]:,}.\n'
    )
    rows = [_row(task, r) for task, r in entry['tasks'].items()]
    lines += results_lib.markdown_table(header, rows, 'llrrrr')
  return lines


def _command() -> str:
  """The command line, with $MTL_DATA_DIR and paths relative to the repo."""
  text = results_lib.command_line()
  data = os.environ.get('MTL_DATA_DIR')
  if data:
    text = text.replace(str(pathlib.Path(data).resolve()), '$MTL_DATA_DIR')
    text = text.replace(data, '$MTL_DATA_DIR')
  return text.replace(str(REPO) + os.sep, '')


def main(argv):
  del argv
  from mtl.shell import build, validate

  config = FLAGS.config
  try:
    validate.check_config(config)
    if config.input_mode == 'stream':  # The same rows, held in memory.
      config.input_mode = 'device'
    dataset = build.load_dataset(config)
  except MtlError as e:
    sys.exit(f'table_baselines: error: {config_file.one_line(e)}')
  name = FLAGS.name or config.dataset.get('name') or config.dataset_name
  if not FLAGS.name and 'protocol' in config.dataset:
    name = f'{name}_{config.dataset.protocol}'

  def echo(task, r):
    print(name, ' | '.join(_row(task, r)), flush=True)

  gbdt = dict(max_iter=FLAGS.gbdt_max_iter, stride=FLAGS.gbdt_stride)
  gbdt['leaves'] = [int(v) for v in FLAGS.gbdt_leaves]
  gbdt['lrs'] = [float(v) for v in FLAGS.gbdt_learning_rates]
  c_grid = [float(c) for c in FLAGS.c_grid]
  with threadpoolctl.threadpool_limits(FLAGS.threads):
    tasks = baselines(
      dataset, c_grid=c_grid, seeds=FLAGS.seeds, gbdt=gbdt, echo=echo
    )
  stem = pathlib.Path(FLAGS.out).with_suffix('')
  path = stem.with_name(stem.name + '.json')
  lock = open(f'{tempfile.gettempdir()}/{stem.name}.lock', 'w')  # noqa: SIM115
  fcntl.flock(lock, fcntl.LOCK_EX)  # Runs side by side update one file.
  record = json.loads(path.read_text()) if path.is_file() else {}
  record = {k: v for k, v in record.items() if 'tasks' in v}  # Old format.
  rows = {s: dataset.num_rows(s) for s in SPLITS}
  record[name] = dict(command=_command(), rows=rows, tasks=tasks)
  results_lib.write_results(stem.name, record, markdown(record), out=stem)


def _parse(argv):
  try:
    rest = config_file.parse(argv, FLAGS['config'])
  except MtlError as e:
    sys.exit(f'table_baselines: error: {config_file.one_line(e)}')
  if FLAGS['verbosity'].using_default_value:
    logging.set_verbosity(logging.WARNING)
  return rest


if __name__ == '__main__':
  _define_flags()
  spec = config_file.config_spec(sys.argv)
  if spec:  # configs/*.py import `configs.common` from the folder above.
    path = pathlib.Path(spec.split(':', 1)[0]).resolve()
    sys.path.insert(0, str(path.parent.parent))
  app.run(main, flags_parser=_parse)
