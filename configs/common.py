"""Every config key of mtl and its default; the other configs build on this.

`base_config(model_name, dataset_name)` returns a locked ConfigDict: a typo in
a config file or a command-line override fails with the key's name. Keys:

  seed                 model init, dropout and data order derive from it
  dataset_name         a key of mtl.data.DATASETS
  dataset              keyword arguments of that dataset's loader, defaults
                       from its signature
  model_name           a key of mtl.core.architectures.ARCHITECTURES
  model                keyword arguments of that architecture
  embedding.dim        embedding size of every categorical feature
  embedding.dtype      'float32' (default) | 'bfloat16': the tables stored
                       in bfloat16, lookups float32, optimizer state
                       float32 (docs/scaling.md "Precision")
  towers.hidden        hidden sizes of each task's tower (a final Dense(1)
                       is added); towers.dropout its dropout rate
  task_loss            binary tasks' training loss, any dataset, as
                       ((task, value), ...) per key: pos_weight (w > 0 on
                       the positives' BCE), focal_gamma (>= 0) and
                       focal_alpha (in (0, 1)) of the focal loss (Lin et
                       al. 2017; mtl/core/losses.py); () each: plain BCE.
                       Over a table task entry's own keys of those names.
                       Evaluation's logloss stays the plain BCE
  wide                 Wide & Deep's wide part: enabled (False: none), dense
                       (a linear term on the dense columns too), crosses
                       (pairs of categorical feature names, each hashed
                       into cross_buckets rows); a linear model per output
                       over the ids added to the towers' logits, params
                       `wide`, zero at init (docs/models.md)
  interaction          'none' | 'fm' (factorization machine's second-order
                       vector over the sparse fields) | 'dcn_v2' (DCN-V2's
                       cross network): the backbone takes concat(x, it(x));
                       not with two towers
  cross                num_layers and low_rank (0: full-rank W) of 'dcn_v2'
  numeric              the dense columns' embedding: embedding 'none' (raw
                       columns) | 'periodic' (PLR: per column, ReLU of a
                       linear map of sin and cos of `frequencies` trained
                       frequencies, initialised N(0, sigma^2), to `dim`
                       values; Gorishniy et al. 2022; params `numeric`);
                       not with two towers or single_task
  precision            'float32' (default: the plain program) | 'bfloat16':
                       the backbone's and towers' matmuls and activations
                       in bfloat16; params, optimizer state, embeddings,
                       logits, losses, AUC counts and balancing stay float32
                       (mtl/core/precision.py; docs/scaling.md "Precision")
  optimizer            name, learning_rate, weight_decay, grad_clip_norm,
                       schedule ('constant' | 'cosine'), warmup_steps;
                       sparse: tables (names), min_rows (0: off) and method
                       ('lazy_adam' | 'adagrad' | 'rowwise_adagrad' |
                       'ftrl' | 'adam') of the embedding tables updated
                       sparsely (the touched rows only; the default: none);
                       'adam' is dense Adam on every row (for tables split
                       by rows: parallel.sharding); 'ftrl' is
                       FTRL-Proximal, alpha the learning rate without its
                       schedule, sparse.ftrl its beta, l1 and l2.
                       wide: the Wide & Deep wide part's (params `wide`)
                       own optimizer: name 'same' (the default: the main
                       optimizer) | 'ftrl' | 'adagrad', learning_rate
                       (constant), l1 (ftrl only), l2, beta (ftrl); clipped
                       with the rest. embedding_l2: lambda of lambda *
                       ||row||^2 on each distinct embedding row a step looks
                       up (0: off; not in the reported losses);
                       embedding_l2_tables ((table, lambda), ...) per table
  weighting_name       a key of mtl.core.weighting.WEIGHTINGS
  weighting.<method>   keyword arguments of each method; only the chosen
                       method's are used, so `--config.weighting_name=X`
                       switches the method from the command line
  batch_size           global training batch
  num_epochs           passes over the training split
  input_mode           'device' (the dataset resident on the device,
                       shuffled there, steps_per_dispatch steps per compiled
                       call with lax.scan) or 'host' (numpy batches, one
                       step per call)
  steps_per_dispatch   train steps per compiled call in 'device' mode
  eval_batch_size      evaluation batch (the split is padded, masked)
  eval_every_epochs    validation during training
  select_best          the reported params (mtl/shell/selection.py): 'first'
                       the epoch with the best validation score of the first
                       task (the papers' model selection; True the same),
                       'last' the last epoch (False the same), 'mean' the
                       best mean score of the trained tasks, 'per_task' each
                       task from its own best epoch (a single run); a score
                       is the AUC, or minus the MSE of a regression
  early_stopping       patience: stop after this many evaluations without an
                       improvement of the selection (per_task: of any task;
                       a population: of any member); 0: off
  num_auc_bins         bins of the in-program AUC histogram, equal-width on
                       the logit over [-20, 20]: pairs within a bin count as
                       ties, an error of at most half their share whatever
                       the base rate (~6e-5 at 2**16 for an AUC of 0.8 on
                       unit-variance logits; mtl/core/metrics.py)
  eval_metrics         mtl-eval's host-side metrics, by name (a tuple of
                       keys of mtl.core.metrics_registry.METRICS; default
                       its DEFAULT: xauc, mae, ece, predicted_mean,
                       observed_rate, gauc)
  plugins              modules imported first, which register the user's
                       own components (mtl/shell/plugins.py); base_config's
                       `plugins` argument sets it
  log_every_steps      training metrics to metrics.jsonl / W&B
  progress_bar         tqdm bar with steps/s and the latest losses
  wandb                mode (disabled | offline | online), project, entity,
                       group, name, tags
  checkpoint           every_steps (0: at every epoch end), max_to_keep,
                       async_save; <workdir>/checkpoints, resumed by rerunning
                       the same command
  init_from            a workdir whose latest params warm-start this run
  workdir_allow_changes  rerun a workdir with a config that differs in keys
                       that change the trained numbers (the run refuses
                       otherwise, naming them; num_epochs may always grow)
  parallel             backend ('pmap' | 'shard_map') and num_devices (1: the
                       plain single-device step; 0: every device of every
                       process; N: the first N); data-parallel runs need
                       input_mode 'host' and a batch the devices divide;
                       sharding.rows (table names) and sharding.min_bytes
                       (0: off) split embedding tables by rows over the
                       devices (shard_map; mtl/shell/sharding.py)
  skip_nonfinite       skip steps with a non-finite loss or gradient
                       (optax.apply_if_finite) and count them, instead of
                       stopping the run; max_consecutive_nonfinite in a row
                       still stop it
  divergence_factor    warn when a finite training loss exceeds this many
                       times its first value (0: off); stop_on_divergence
                       ends the run instead (exit code 3)
  diagnostics_every_steps  per-task gradient norms, gradient cosines and
                       mean gate weights every N steps (0: off)
  profile              steps: 'A:B' traces the training steps that take
                       the step counter from A to B with jax.profiler,
                       rounded out to dispatch boundaries, into
                       <workdir>/profile/ (mtl/shell/profiling.py); '': off
  population           K members trained in one compiled program
                       (mtl.shell.trainer): size (K; alone: seeds
                       seed..seed+K-1), seeds, learning_rates, task_weights
                       (one tuple per member), weighting.<key> (values of
                       the chosen method's hyper-parameter <key>, one per
                       member: --config.population.weighting.alpha=(1,2));
                       each list has K values or one; bagging (each member
                       on its own Poisson(1) bootstrap of the rows)
"""

import ml_collections
from ml_collections.config_dict import placeholder

from mtl.core import metrics_registry
from mtl.core import model as model_lib
from mtl.core.architectures import ARCHITECTURES
from mtl.core.weighting import WEIGHTINGS
from mtl.data import DATASETS
from mtl.errors import ConfigError
from mtl.shell import keywords
from mtl.shell import plugins as plugins_lib


def base_config(
  model_name: str = 'mmoe',
  dataset_name: str = 'census_income',
  *,
  plugins: tuple[str, ...] = (),
) -> ml_collections.ConfigDict:
  """All keys with defaults for `model_name` on `dataset_name`, locked;
  the `plugins` modules are loaded first, so their components count."""
  plugins_lib.load(plugins)
  for kind, name, registry in (
    ('model', model_name, ARCHITECTURES),
    ('dataset', dataset_name, DATASETS),
  ):
    if name not in registry:
      raise ConfigError(
        f'unknown {kind} {name!r}: expected one of '
        f'{", ".join(sorted(registry))}'
      )
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset_name = dataset_name
  c.dataset = keywords.defaults(DATASETS[dataset_name])
  c.model_name = model_name
  # Every registered architecture's keywords, unset: the chosen one's
  # defaults come from its signature when the run starts.
  c.model = keywords.union_of(ARCHITECTURES)
  c.embedding = dict(dim=8, dtype='float32')
  c.towers = dict(hidden=(32,), dropout=0.0)
  c.task_loss = dict(pos_weight=(), focal_gamma=(), focal_alpha=())
  # Wide & Deep and feature crosses (mtl/core/layers/wide.py,
  # interactions.py): their keywords and defaults; off by default.
  c.wide = dict(model_lib.WIDE_DEFAULTS)
  c.interaction = 'none'
  # The dense columns' embedding (mtl/core/layers/numeric.py): 'none' or
  # 'periodic' (PLR), with its keywords.
  c.numeric = dict(model_lib.NUMERIC_DEFAULTS)
  c.cross = dict(model_lib.CROSS_DEFAULTS)
  # The backbone's and towers' compute dtype (mtl/core/precision.py).
  c.precision = 'float32'
  c.optimizer = dict(
    name='adam',
    learning_rate=2e-3,
    weight_decay=0.0,
    grad_clip_norm=0.0,
    schedule='cosine',
    warmup_steps=0,
    # Sparse embedding updates (mtl/core/optim.py): these tables, and every
    # table of >= min_rows rows (0: none by size), take `method`.
    sparse=dict(
      tables=(),
      min_rows=0,
      method='lazy_adam',
      ftrl=dict(beta=1.0, l1=0.0, l2=0.0),  # method 'ftrl' only
    ),
    # The wide part's optimizer ('same': the main one) and L2 on the
    # embedding rows a step touches (mtl/core/optim.py); off by default.
    wide=dict(name='same', learning_rate=0.05, l1=0.0, l2=0.0, beta=1.0),
    embedding_l2=0.0,
    embedding_l2_tables=(),
  )
  c.weighting_name = 'equal'
  c.weighting = {k: keywords.defaults(f) for k, f in WEIGHTINGS.items()}
  c.batch_size = 1024
  c.num_epochs = 12
  c.input_mode = 'device'
  c.steps_per_dispatch = 64
  c.eval_batch_size = 8192
  c.eval_every_epochs = 1
  # A str, or a bool (True: 'first', False: 'last') as configs once set it.
  c.select_best = ml_collections.FieldReference('first', field_type=object)
  c.early_stopping = dict(patience=0)
  c.num_auc_bins = 2**16
  c.eval_metrics = metrics_registry.DEFAULT
  c.plugins = tuple(plugins)
  c.log_every_steps = 50
  c.progress_bar = True
  c.wandb = dict(
    mode='disabled',
    project='mtl',
    entity=placeholder(str),
    group=placeholder(str),
    name=placeholder(str),
    tags=(),
  )
  c.checkpoint = dict(every_steps=0, max_to_keep=3, async_save=True)
  c.init_from = placeholder(str)
  c.workdir_allow_changes = False
  c.parallel = dict(
    backend='pmap', num_devices=1, sharding=dict(rows=(), min_bytes=0)
  )
  c.skip_nonfinite = False
  c.max_consecutive_nonfinite = 10
  c.divergence_factor = 1000.0
  c.stop_on_divergence = False
  c.diagnostics_every_steps = 200
  c.profile = dict(steps='')  # 'A:B': a jax.profiler trace (profiling.py)
  c.population = dict(
    size=0,
    seeds=(),
    learning_rates=(),
    task_weights=(),
    # Each member trains on its own Poisson(1) bootstrap of the training
    # rows (mtl/core/bagging.py).
    bagging=False,
    # One tuple of values per member for any method's hyper-parameter.
    weighting=keywords.union_of(WEIGHTINGS, per_member=True),
  )
  c.lock()
  return c


# Generated tables (mtl/data/scale.py, mtl/data/video.py): the files of
# configs/<stem>.py:<rows> are $<ENV>/<stem>_<rows>/{train,validation,test}
# .parquet, split by files (by time), small MMoE / Shared-Bottom sizes.
GENERATED_MODELS = {
  'mmoe': dict(num_experts=4, expert_hidden=(64,)),
  'shared_bottom': dict(hidden=(64, 32)),
}


def generated_dir(stem: str, env: str, rows: int, root=None):
  """<root>/<stem>_<rows>/, the root $<env> by default."""
  import os
  import pathlib

  root = root or os.environ.get(env, f'${env}')
  return pathlib.Path(root) / f'{stem}_{rows}'


def generated_table_config(stem: str, env: str, arg: str):
  """The base config of a generated table: 'ROWS' or 'ROWS,MODEL' picks the
  folder $<env>/<stem>_<ROWS>/ and the model (GENERATED_MODELS, default
  mmoe); the caller sets the features, tasks and training keys.

  Raises:
    ConfigError: an argument of another form or an unknown model.
  """
  rows, _, model_name = str(arg).partition(',')
  model_name = model_name or 'mmoe'
  if not rows.isdigit() or model_name not in GENERATED_MODELS:
    raise ConfigError(
      f'configs/{stem}.py: argument {arg!r}, expected ROWS[,MODEL] with '
      f'MODEL one of {sorted(GENERATED_MODELS)}'
    )
  config = base_config(model_name, 'table')
  config.model.update(GENERATED_MODELS[model_name])
  d = config.dataset
  d.name = stem
  folder = f'${env}/{stem}_{int(rows)}'
  d.path = f'{folder}/train.parquet'
  d.validation_path = f'{folder}/validation.parquet'
  d.test_path = f'{folder}/test.parquet'
  d.split = 'files'
  return config


# The parts a real-data config (configs/kuairand.py, movielens_table.py,
# census.py) combines after its model: 'MODEL,PART+PART'. 'plain' is the
# model alone; the configs' default is the combination chosen on validation
# by experiments/real_data.py.
PARTS = (
  'plain',
  'counts',
  'user_rates',
  'wide',
  'ftrl',
  'dcn',
  'fm',
  'per_task',
  'mean',
  'rare',
  'l2',
  'long',
  'plr',
  'weights',
)
# The 'plr' part's periodic embeddings of the dense columns: frequencies and
# width within the paper's tuned ranges (Gorishniy et al. 2022), sigma chosen
# on census validation (MMoE, seed 0, paper protocol; mean of the income and
# marital AUCs 0.97190, 0.97230, 0.97270, 0.97305, 0.97285 at sigma 0.3, 1,
# 3, 10, 30; 0.97104 without).
PLR = dict(embedding='periodic', frequencies=32, dim=16, sigma=10.0)


def split_arg(arg, stem: str, models, default: str):
  """'MODEL' or 'MODEL,PART+PART' -> (model, frozenset of parts): MODEL one
  of `models`, each PART one of PARTS; 'MODEL' alone takes `default`.

  Raises:
    ConfigError: an unknown model or part, naming the config file.
  """
  model_name, _, parts = str(arg or '').partition(',')
  model_name = model_name or 'mmoe'
  chosen = frozenset(p for p in (parts or default).split('+') if p)
  if model_name not in models:
    raise ConfigError(
      f'configs/{stem}.py: model {model_name!r}, expected one of '
      f'{", ".join(sorted(models))} (argument MODEL[,PART+PART...])'
    )
  unknown = sorted(chosen - set(PARTS))
  if unknown:
    raise ConfigError(
      f'configs/{stem}.py: part {unknown[0]!r} of argument {arg!r}, '
      f'expected one of {", ".join(PARTS)}'
    )
  return model_name, chosen - {'plain'}


def count_features(keys, time: str, labels, parts=('counts',)) -> dict:
  """The count features of `parts`: '<key without _id>_rates', a `count`
  feature of each key column by the `time` column. 'counts': every key's
  earlier rows and rates of `labels`; 'user_rates': the same for the first
  key (the user), the others' earlier rows only; neither: none."""
  if 'counts' not in parts and 'user_rates' not in parts:
    return {}
  return {
    f'{key.removesuffix("_id")}_rates': {
      'kind': 'count',
      'key': key,
      'time': time,
      'labels': tuple(labels) if 'counts' in parts or i == 0 else (),
    }
    for i, key in enumerate(keys)
  }


def apply_parts(config, parts, rare=(), weights=None, stem='') -> None:
  """The model and training parts of `parts` (the features are the
  config's own: 'counts'). wide: the Wide & Deep wide part (ftrl: trained by
  FTRL-Proximal); dcn / fm: config.interaction; per_task / mean:
  config.select_best; rare: positive weight 10 on the `rare` tasks; l2:
  L2 1e-4 on the embedding rows a batch touches; long: 1.5x the epochs;
  plr: the dense columns through periodic embeddings (`PLR`);
  weights: the `fixed` weighting with `weights`, per-task loss weights the
  config found on validation (experiments/loss_weight_search.py).

  Raises:
    ConfigError: 'weights' for a config that has none.
  """
  if 'weights' in parts:
    if weights is None:
      raise ConfigError(
        f"configs/{stem}.py: part 'weights', but this config has no "
        'searched task weights, expected a config with TASK_WEIGHTS '
        '(experiments/loss_weight_search.py)'
      )
    config.weighting_name = 'fixed'
    config.weighting.fixed.weights = tuple(weights)
  if 'rare' in parts:
    config.task_loss.pos_weight = tuple((task, 10.0) for task in rare)
  if 'l2' in parts:
    config.optimizer.embedding_l2 = 1e-4
  if 'long' in parts:
    config.num_epochs = config.num_epochs * 3 // 2
  if 'plr' in parts:
    config.numeric.update(PLR)
  if 'wide' in parts or 'ftrl' in parts:
    config.wide.enabled = True
  if 'ftrl' in parts:
    config.optimizer.wide.name = 'ftrl'
  if 'dcn' in parts:
    config.interaction = 'dcn_v2'
  if 'fm' in parts:
    config.interaction = 'fm'
  for mode in ('per_task', 'mean'):
    if mode in parts:
      config.select_best = mode
