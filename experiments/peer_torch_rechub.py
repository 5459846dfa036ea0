"""Training throughput of torch-rechub's MMoE trainer on UCI Census-Income.

A peer baseline for the mtl project, not part of the mtl package: nothing
in mtl or its tests imports this file, and it needs torch and torch-rechub,
which mtl does not depend on.

What it reproduces: torch-rechub's own census example
(examples/ranking/data/census-income/preprocess_census.py, then
examples/ranking/run_census.py --model_name MMOE), i.e.
  - inputs: 7 dense columns (min-max scaled over train+test, rounded to 4
    places) and the 32 other columns as sparse (label-encoded over
    train+test, embed_dim 4); 'instance weight' dropped; income and marital
    status are the labels, so marital status is NOT an input, education is;
  - MMOE(n_expert=8, expert dims [16], tower dims [8] per task, ReLU,
    BatchNorm in every MLP layer, dropout 0, softmax gates with BatchNorm);
  - MTLTrainer with Adam(lr 1e-3, weight_decay 1e-4), BCE loss averaged over
    the two tasks, batch size 1024, DataGenerator's DataLoader
    (shuffle=True, num_workers=0), seed 2022;
  - the UCI test file split 1:1 into validation and test, stratified on
    income (the example uses no random_state; here it is --seed).

What it times (wall clock, time.perf_counter):
  - 'trainer': MTLTrainer.train_one_epoch(train_dataloader) over the full
    199,523 training rows, i.e. the library's own training loop including
    its DataLoader's per-row __getitem__ and collation, forward, backward
    and Adam step. CSV reading, preprocessing, validation and test
    evaluation are outside the timed region. One untimed warm-up epoch
    comes first; then --repeats timed repeats of --epochs epochs each.
  - 'dataloader_only': iterating the same DataLoader without the model.
  - 'prebatched': train_one_epoch fed a list of already collated tensor
    batches (same shuffling, shapes and dtypes), i.e. the trainer's step
    cost without torch-rechub's input pipeline.
Examples/s = epochs * rows / seconds; the median over repeats is reported.
Each repeat also records how many cores other processes used meanwhile
(from /proc/stat). On a 2-core machine a 2-thread torch run slows down
more than tenfold when anything else takes a core, so by default a repeat
starts only once the machine is quiet and is kept only if other processes
used <= --max_other_load cores on average (all attempts are in the JSON).
With --auc_epochs N > 0 it also trains a fresh model with
MTLTrainer.fit(train, val) for N epochs (the example's default is 1) and
reports the test AUCs of both tasks.

Command (from the repository root, in an environment with torch and
torch-rechub installed, e.g. pip install torch==2.13.0 torch-rechub==0.9.0):
  python experiments/peer_torch_rechub.py \\
    --data_dir $MTL_DATA_DIR/census-income-kdd \\
    --batch_size 1024 --threads 2 --epochs 1 --repeats 3 --auc_epochs 1
It prints examples/s and writes experiments/results/peer_torch_rechub.json
and .md (or --out).
"""

import importlib.metadata
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import types

import numpy as np
from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import harness  # noqa: E402

# torch, torch-rechub, pandas and scikit-learn are imported where used: the
# command line (--help) works without them.
_DATA_DIR = flags.DEFINE_string(
  'data_dir', None, 'census-income-kdd directory (census-income.*.gz).'
)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 1024, 'Batch size.')
_THREADS = flags.DEFINE_integer('threads', 2, 'torch.set_num_threads.')
_EPOCHS = flags.DEFINE_integer('epochs', 1, 'Timed epochs per repeat.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Kept repeats per kind.')
_AUC_EPOCHS = flags.DEFINE_integer(
  'auc_epochs', 0, 'If > 0, fit() this many epochs and report test AUC.'
)
_SEED = flags.DEFINE_integer('seed', 2022, 'torch seed and split seed.')
_MAX_OTHER_LOAD = flags.DEFINE_float(
  'max_other_load',
  0.1,
  'Keep only repeats during which other processes used at most this many '
  'cores on average (negative: keep all).',
)
_MAX_ATTEMPTS = flags.DEFINE_integer('max_attempts', 15, 'Attempts.')
_QUIET_TIMEOUT = flags.DEFINE_float(
  'quiet_timeout', 300.0, 'Seconds to wait for a quiet machine per repeat.'
)
harness.define_flags(out='peer_torch_rechub')
flags.mark_flag_as_required('data_dir')
FLAGS = flags.FLAGS

# Column names as spelled in torch-rechub's preprocess_census.py.
COL_NAMES = [
  'age',
  'class of worker',
  'industry code',
  'occupation code',
  'education',
  'wage per hour',
  'enrolled in edu inst last wk',
  'marital status',
  'major industry code',
  'major occupation code',
  'race',
  'hispanic origin',
  'sex',
  'member of a labor union',
  'reason for unemployment',
  'full or part time employment stat',
  'capital gains',
  'capital losses',
  'divdends from stocks',
  'tax filer status',
  'region of previous residence',
  'state of previous residence',
  'detailed household and family stat',
  'detailed household summary in household',
  'instance weight',
  'migration code-change in msa',
  'migration code-change in reg',
  'migration code-move within reg',
  'live in this house 1 year ago',
  'migration prev res in sunbelt',
  'num persons worked for employer',
  'family members under 18',
  'country of birth father',
  'country of birth mother',
  'country of birth self',
  'citizenship',
  'own business or self employed',
  'fill inc questionnaire for veterans admin',
  'veterans benefits',
  'weeks worked in year',
  'year',
  'income',
]
DENSE_COLS = [
  'age',
  'wage per hour',
  'capital gains',
  'capital losses',
  'divdends from stocks',
  'num persons worked for employer',
  'weeks worked in year',
]
LABEL_COLS = ['cvr_label', 'ctr_label']  # income, never married
EMBED_DIM = 4
N_EXPERT = 8
EXPERT_PARAMS = {'dims': [16]}
TOWER_PARAMS = [{'dims': [8]}, {'dims': [8]}]
LR = 1e-3
WEIGHT_DECAY = 1e-4


def preprocess(data_dir, seed):
  """Mirrors preprocess_census.py: returns train, val, test frames."""
  import pandas as pd
  from sklearn.model_selection import train_test_split
  from sklearn.preprocessing import LabelEncoder, MinMaxScaler

  read = lambda name: pd.read_csv(
    os.path.join(data_dir, name), header=None, names=COL_NAMES
  )
  train = read('census-income.data.gz')
  test = read('census-income.test.gz')
  del train['instance weight']
  del test['instance weight']
  features = [
    c
    for c in COL_NAMES
    if c not in ('instance weight', 'income', 'marital status')
  ]
  category_cols = [c for c in features if c not in DENSE_COLS]
  n_train = train.shape[0]
  data = pd.concat([train, test], axis=0)
  for col in category_cols:
    data[col] = LabelEncoder().fit_transform(data[col])
  data[DENSE_COLS] = MinMaxScaler().fit_transform(data[DENSE_COLS])
  data[DENSE_COLS] = data[DENSE_COLS].round(4)
  data['income'] = data['income'].map({' 50000+.': 1, ' - 50000.': 0})
  data['marital status'] = data['marital status'].apply(
    lambda x: 1 if x == ' Never married' else 0
  )
  df_train = data.iloc[:n_train, :]
  df_test = data.iloc[n_train:, :]
  df_val, df_test = train_test_split(
    df_test, test_size=0.5, stratify=df_test['income'], random_state=seed
  )
  return df_train, df_val, df_test


def census_data_dict(df_train, df_val, df_test):
  """Mirrors run_census.get_census_data_dict for non-ESMM models."""
  import pandas as pd
  from torch_rechub.basic.features import DenseFeature, SparseFeature

  train_idx = df_train.shape[0]
  val_idx = train_idx + df_val.shape[0]
  data = pd.concat([df_train, df_val, df_test], axis=0).fillna(0)
  data = data.rename(
    columns={'income': 'cvr_label', 'marital status': 'ctr_label'}
  )
  sparse_cols = [
    c for c in data.columns if c not in DENSE_COLS and c not in LABEL_COLS
  ]
  features = [
    SparseFeature(c, data[c].max() + 1, embed_dim=EMBED_DIM)
    for c in sparse_cols
  ] + [DenseFeature(c) for c in DENSE_COLS]
  used = sparse_cols + DENSE_COLS
  split = lambda a, b: (
    {name: data[name].values[a:b] for name in used},
    data[LABEL_COLS].values[a:b],
  )
  return (
    features,
    sparse_cols,
    split(0, train_idx),
    split(train_idx, val_idx),
    split(val_idx, None),
  )


def build(features, batch_size, seed, splits, model_dir):
  """A fresh MMOE, its MTLTrainer and DataGenerator's three DataLoaders."""
  import torch
  from torch_rechub.basic.features import DenseFeature, SparseFeature
  from torch_rechub.models.multi_task import MMOE
  from torch_rechub.trainers import MTLTrainer
  from torch_rechub.utils.data import DataGenerator

  torch.manual_seed(seed)
  # SparseFeature caches its nn.Embedding on the feature object, so new
  # feature objects are needed for a model that does not share tables.
  features = [
    SparseFeature(f.name, f.vocab_size, embed_dim=f.embed_dim)
    if isinstance(f, SparseFeature)
    else DenseFeature(f.name)
    for f in features
  ]
  (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
  model = MMOE(
    features,
    ['classification'] * 2,
    N_EXPERT,
    expert_params=dict(EXPERT_PARAMS),
    tower_params_list=[dict(p) for p in TOWER_PARAMS],
  )
  dg = DataGenerator(x_tr, y_tr)
  loaders = dg.generate_dataloader(
    x_val=x_va, y_val=y_va, x_test=x_te, y_test=y_te, batch_size=batch_size
  )
  trainer = MTLTrainer(
    model,
    task_types=['classification'] * 2,
    optimizer_params={'lr': LR, 'weight_decay': WEIGHT_DECAY},
    n_epoch=1,
    earlystop_patience=30,
    device='cpu',
    model_path=model_dir,
  )
  return model, trainer, loaders


def prebatched(x, y, batch_size, rng):
  """Collated batches as the DataLoader would yield (same dtypes)."""
  import torch

  perm = rng.permutation(len(y))
  out = []
  for start in range(0, len(y), batch_size):
    idx = perm[start : start + batch_size]
    xb = {
      k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in x.items()
    }
    out.append((xb, torch.from_numpy(np.ascontiguousarray(y[idx]))))
  return out


def busy_ticks():
  """Busy CPU ticks of the whole machine (Linux), or None."""
  try:
    with open('/proc/stat') as f:
      v = [int(x) for x in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  return sum(v[:3]) + sum(v[5:8])  # user nice system irq softirq steal


def wait_quiet(limit, timeout):
  """Waits (up to timeout s) until other processes use <= limit cores."""
  t_end = time.perf_counter() + timeout
  while time.perf_counter() < t_end:
    b0 = busy_ticks()
    if b0 is None:
      return
    time.sleep(2.0)
    load = (busy_ticks() - b0) / os.sysconf('SC_CLK_TCK') / 2.0
    if load <= limit:
      return


def timed(fn, n_rows, epochs):
  """Wall time of fn() x epochs, plus how busy the rest of the machine was.

  other_load_cores: CPU cores used by other processes on average while
  timing (machine busy time minus this process's CPU time, over wall
  time). Near 0 means the measurement had the machine to itself.
  """
  b0, c0 = busy_ticks(), time.process_time()
  t0 = time.perf_counter()
  for _ in range(epochs):
    fn()
  dt = time.perf_counter() - t0
  cpu = time.process_time() - c0
  b1 = busy_ticks()
  res = {
    'seconds': dt,
    'examples_per_s': epochs * n_rows / dt,
    'process_cpu_seconds': cpu,
  }
  if b0 is not None and b1 is not None:
    hz = os.sysconf('SC_CLK_TCK')
    res['other_load_cores'] = max(0.0, ((b1 - b0) / hz - cpu) / dt)
  return res


def main(argv):
  del argv
  import pandas as pd
  import torch

  args = types.SimpleNamespace(
    **{
      name: FLAGS[name].value
      for name in (
        'data_dir',
        'batch_size',
        'threads',
        'epochs',
        'repeats',
        'auc_epochs',
        'seed',
        'max_other_load',
        'max_attempts',
        'quiet_timeout',
      )
    }
  )
  if args.max_other_load < 0:
    args.max_other_load = None

  default_threads = torch.get_num_threads()
  torch.set_num_threads(args.threads)

  t0 = time.perf_counter()
  frames = preprocess(args.data_dir, args.seed)
  features, sparse_cols, tr, va, te = census_data_dict(*frames)
  prep_s = time.perf_counter() - t0
  n_train = len(tr[1])
  print(
    f'rows train/val/test: {n_train}/{len(va[1])}/{len(te[1])}; '
    f'{len(sparse_cols)} sparse, {len(DENSE_COLS)} dense; '
    f'preprocessing {prep_s:.1f}s'
  )

  model_dir = tempfile.mkdtemp(prefix='peer_rechub_')
  model, trainer, (train_dl, _, _) = build(
    features, args.batch_size, args.seed, (tr, va, te), model_dir
  )
  n_params = sum(q.numel() for q in model.parameters())
  print('warm-up epoch (untimed)')
  trainer.train_one_epoch(train_dl)

  kinds = {
    'trainer': lambda: lambda: trainer.train_one_epoch(train_dl),
    'dataloader_only': lambda: lambda: [None for _ in train_dl],
    'prebatched': lambda: prebatched_fn(),
  }
  rng = np.random.default_rng(args.seed)

  def prebatched_fn():
    it = iter(
      [
        prebatched(tr[0], tr[1], args.batch_size, rng)
        for _ in range(args.epochs)
      ]
    )
    return lambda: trainer.train_one_epoch(next(it))

  limit = args.max_other_load
  runs = {k: [] for k in kinds}
  ok = lambda k: [x for x in runs[k] if x['accepted']]
  for attempt in range(args.max_attempts):
    for k, make in kinds.items():
      if len(ok(k)) >= args.repeats:
        continue
      if limit is not None:
        wait_quiet(limit, args.quiet_timeout)
      res = timed(make(), n_train, args.epochs)
      load = res.get('other_load_cores')
      res['accepted'] = limit is None or (load is not None and load <= limit)
      runs[k].append(res)
      print(
        f'attempt {attempt} {k}: {res["examples_per_s"]:,.0f} ex/s, '
        f'{res["seconds"]:.1f}s, other load '
        f'{"n/a" if load is None else f"{load:.2f}"}, '
        f'{"kept" if res["accepted"] else "dropped"}'
      )
    if all(len(ok(k)) >= args.repeats for k in kinds):
      break

  summary = {}
  for k, v in runs.items():
    kept = ok(k)[: args.repeats]
    eps = [x['examples_per_s'] for x in kept]
    summary[k] = {
      'examples_per_s': eps,
      'seconds': [x['seconds'] for x in kept],
      'process_cpu_seconds': [x['process_cpu_seconds'] for x in kept],
      'other_load_cores': [x.get('other_load_cores') for x in kept],
      'median_examples_per_s': statistics.median(eps) if eps else None,
      'all_attempts': v,
    }
    if eps:
      print(
        f'{k}: median {summary[k]["median_examples_per_s"]:,.0f} '
        f'examples/s over {len(eps)} kept repeats ({len(v)} tried)'
      )
    else:
      print(f'{k}: no repeat ran on a quiet machine ({len(v)} tried)')

  aucs = None
  if args.auc_epochs > 0:
    _, trainer2, (train2, val2, test2) = build(
      features, args.batch_size, args.seed, (tr, va, te), model_dir
    )
    trainer2.n_epoch = args.auc_epochs
    t0 = time.perf_counter()
    trainer2.fit(train2, val2)
    fit_s = time.perf_counter() - t0
    test_auc = trainer2.evaluate(trainer2.model, test2)
    aucs = {
      'epochs': args.auc_epochs,
      'fit_seconds_incl_val': fit_s,
      'test_auc_income': test_auc[0],
      'test_auc_never_married': test_auc[1],
    }
    print(
      f'test AUC after {args.auc_epochs} epoch(s): income '
      f'{test_auc[0]:.4f}, never married {test_auc[1]:.4f}'
    )

  result = {
    'what': 'torch-rechub MTLTrainer.train_one_epoch, MMOE, UCI census',
    'versions': {
      'torch': torch.__version__,
      'torch_rechub': importlib.metadata.version('torch-rechub'),
      'numpy': np.__version__,
      'pandas': pd.__version__,
      'python': platform.python_version(),
    },
    'machine': {
      'cpu_count': os.cpu_count(),
      'processor': platform.processor() or platform.machine(),
    },
    'threads': {
      'torch_default': default_threads,
      'used': torch.get_num_threads(),
      'interop': torch.get_num_interop_threads(),
    },
    'batch_size': args.batch_size,
    'epochs_per_repeat': args.epochs,
    'repeats': args.repeats,
    'max_other_load_cores': args.max_other_load,
    'train_rows': n_train,
    'model': {
      'name': 'MMOE',
      'n_expert': N_EXPERT,
      'expert_params': EXPERT_PARAMS,
      'tower_params_list': TOWER_PARAMS,
      'activation': 'relu',
      'dropout': 0.0,
      'batch_norm': True,
      'embed_dim': EMBED_DIM,
      'sparse_cols': sparse_cols,
      'dense_cols': DENSE_COLS,
      'input_dim': len(sparse_cols) * EMBED_DIM + len(DENSE_COLS),
      'n_params': n_params,
      'optimizer': 'Adam',
      'lr': LR,
      'weight_decay': WEIGHT_DECAY,
      'loss': 'mean of per-task BCE',
      'seed': args.seed,
    },
    'timing': summary,
    'median_examples_per_s': summary['trainer']['median_examples_per_s'],
    'test_auc': aucs,
  }
  print(f'median examples/s (trainer): {result["median_examples_per_s"]}')
  harness.write_results(
    'peer_torch_rechub', result, markdown(result), out=FLAGS.out
  )


def markdown(result) -> list[str]:
  auc = result['test_auc']
  return [
    f'{result["what"]}: examples/s, median of the kept repeats (batch '
    f'{result["batch_size"]}, {result["threads"]["used"]} torch threads, '
    f'torch {result["versions"]["torch"]}, torch-rechub '
    f'{result["versions"]["torch_rechub"]}).',
    '',
    *harness.markdown_table(
      ['timed', 'median examples/s', 'kept repeats'],
      [
        [
          kind,
          '-'
          if t['median_examples_per_s'] is None
          else f'{t["median_examples_per_s"]:,.0f}',
          len(t['examples_per_s']),
        ]
        for kind, t in result['timing'].items()
      ],
      'lrr',
    ),
    '',
    'Test AUC: '
    + (
      f'income {auc["test_auc_income"]:.4f}, never married '
      f'{auc["test_auc_never_married"]:.4f} after {auc["epochs"]} epoch(s).'
      if auc
      else 'not measured (--auc_epochs=0).'
    ),
  ]


if __name__ == '__main__':
  harness.run_main(main)
