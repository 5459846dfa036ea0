"""Every config key of mtl and its default; the other configs build on this.

`base_config(model_name, dataset_name)` returns a locked ConfigDict: a typo in
a config file or a command-line override fails with the key's name. Keys:

  seed                 model init, dropout and data order derive from it
  dataset_name         a key of mtl.data.DATASETS
  dataset              keyword arguments of that dataset's loader
  model_name           a key of mtl.core.architectures.ARCHITECTURES
  model                keyword arguments of that architecture
  embedding.dim        embedding size of every categorical feature
  towers.hidden        hidden sizes of each task's tower (a final Dense(1)
                       is added); towers.dropout its dropout rate
  optimizer            name, learning_rate, weight_decay, grad_clip_norm,
                       schedule ('constant' | 'cosine'), warmup_steps
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
  select_best          report the epoch with the best validation AUC of the
                       first task (the papers' model selection); else last
  num_auc_bins         bins of the in-program AUC histogram
  log_every_steps      training metrics to metrics.jsonl / W&B
  progress_bar         tqdm bar with steps/s and the latest losses
  wandb                mode (disabled | offline | online), project, entity,
                       group, name, tags
  checkpoint           every_steps (0: at every epoch end), max_to_keep,
                       async_save; <workdir>/checkpoints, resumed by rerunning
                       the same command
  init_from            a workdir whose latest params warm-start this run
  parallel             backend ('pmap' | 'shard_map') and num_devices (1: the
                       plain single-device step; 0: every device of every
                       process; N: the first N); data-parallel runs need
                       input_mode 'host' and a batch the devices divide
  skip_nonfinite       skip steps with a non-finite loss or gradient
                       (optax.apply_if_finite) and count them, instead of
                       stopping the run; max_consecutive_nonfinite in a row
                       still stop it
  diagnostics_every_steps  per-task gradient norms, gradient cosines and
                       mean gate weights every N steps (0: off)
  population           K members trained in one compiled program
                       (mtl.shell.population_loop): size (K; alone: seeds
                       seed..seed+K-1), seeds, learning_rates, task_weights
                       (one tuple per member), weighting (a dict of the
                       chosen method's hyper-parameters, one value per
                       member); each list has K values or one
"""

import ml_collections
from ml_collections.config_dict import placeholder

MODEL_DEFAULTS = {
  'single_task': dict(hidden=(128, 64), dropout=0.0),
  'shared_bottom': dict(hidden=(128, 64), dropout=0.0),
  'omoe': dict(num_experts=8, expert_hidden=(64,), dropout=0.0),
  'mmoe': dict(num_experts=8, expert_hidden=(64,), dropout=0.0),
  'cgc': dict(
    num_specific_experts=3,
    num_shared_experts=2,
    expert_hidden=(64,),
    dropout=0.0,
  ),
  'ple': dict(
    num_levels=2,
    num_specific_experts=3,
    num_shared_experts=2,
    expert_hidden=(64,),
    dropout=0.0,
  ),
  # ESMM paper: MLP 360-200-80 per network (Sec. 4.2); AITM paper: towers
  # 128-64-32, calibrator alpha 0.6 (Sec. 4.1.3).
  'esmm': dict(hidden=(360, 200, 80), dropout=0.0),
  'aitm': dict(hidden=(128, 64, 32), dropout=0.0, calibration=0.6),
}

DATASET_DEFAULTS = {
  'census_income': dict(
    protocol='paper',  # 'paper' (MMoE KDD'18) or 'library' (torch-rechub)
    task_group=1,  # 1: income + never married; 2: education + never married
    manual_dir=placeholder(str),  # raw UCI files; else $MTL_DATA_DIR/...
    data_dir=placeholder(str),  # TFDS prepared-data dir; else TFDS default
    split_seed=0,  # the 1:1 validation/test split of the UCI test file
  ),
  'ali_ccp': dict(
    conversion_space='click',  # 'click' (CVR on clicks) or 'impression'
    variant='sample',  # torch-rechub's sample, or 'full' (ali_ccp_*.csv)
    manual_dir=placeholder(str),  # raw CSV files; else $MTL_DATA_DIR/...
    data_dir=placeholder(str),  # TFDS prepared-data dir; else TFDS default
    chunksize=65_536,  # rows per streamed read and prepared record
    process_index=0,  # this process's share of the training rows
    process_count=1,
  ),
  'aliexpress': dict(
    conversion_space='click',  # 'click' (CVR on clicks) or 'impression'
    variant='sample',  # torch-rechub's US sample, or 'full' (train/test.csv)
    validation_fraction=0.1,  # of the train file, stratified by labels
    split_seed=0,
    manual_dir=placeholder(str),
    data_dir=placeholder(str),
    chunksize=65_536,
    process_index=0,
    process_count=1,
  ),
  'movielens_100k': dict(
    validation_fraction=0.1,  # random split of the ratings: 80/10/10
    test_fraction=0.1,
    split_seed=0,
    center_rating=True,  # rating label minus the mean training rating
    manual_dir=placeholder(str),
    data_dir=placeholder(str),
    chunksize=65_536,
    process_index=0,
    process_count=1,
  ),
  'synthetic': dict(
    p=0.5,
    c=1.0,
    m=10,
    alpha=placeholder(tuple),
    beta=placeholder(tuple),
    d=100,
    n_train=100_000,
    n_validation=10_000,
    n_test=10_000,
    noise_std=0.1,
    seed=0,
  ),
  # mtl.data.entire_space: clicks and conversions with known propensities.
  'entire_space': dict(
    n_train=200_000,
    n_validation=50_000,
    n_test=50_000,
    num_items=2000,
    zipf=1.1,
    item_dim=8,
    d=16,
    click_rate=0.1,
    conversion_rate=0.2,
    rho_items=0.8,
    rho_features=-0.3,
    item_scale=1.0,
    feature_scale=1.0,
    seed=0,
  ),
}

WEIGHTING_DEFAULTS = {
  'equal': dict(),
  'fixed': dict(weights=placeholder(tuple)),
  'scheduled': dict(weights=placeholder(tuple), gammas=placeholder(tuple)),
  # Binary census tasks: the classification form.
  'uncertainty': dict(forms='classification', learning_rate=1e-2, init=0.0),
  'gradnorm': dict(
    alpha=1.5,
    learning_rate=0.025,
    optimizer='adam',
    initial_losses=placeholder(tuple),
    min_weight=1e-3,
  ),
  # About one census epoch (194 steps of 1024) per window, as the paper.
  'dwa': dict(temperature=2.0, window_steps=194),
  'rlw': dict(distribution='normal', seed=0),
  'pcgrad': dict(seed=0),
  'mgda': dict(normalization='none', num_iterations=250),
  'cagrad': dict(c=0.4, rescale=1, num_iterations=100, learning_rate=0.1),
  'imtl_g': dict(ridge=1e-6),
  'nash_mtl': dict(num_iterations=20, update_every=1, ridge=1e-6),
}


def base_config(
  model_name: str = 'mmoe', dataset_name: str = 'census_income'
) -> ml_collections.ConfigDict:
  """All keys with defaults for `model_name` on `dataset_name`, locked."""
  if model_name not in MODEL_DEFAULTS:
    raise ValueError(f'no defaults for model {model_name!r}')
  if dataset_name not in DATASET_DEFAULTS:
    raise ValueError(f'no defaults for dataset {dataset_name!r}')
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset_name = dataset_name
  c.dataset = dict(DATASET_DEFAULTS[dataset_name])
  c.model_name = model_name
  c.model = dict(MODEL_DEFAULTS[model_name])
  c.embedding = dict(dim=8)
  c.towers = dict(hidden=(32,), dropout=0.0)
  c.optimizer = dict(
    name='adam',
    learning_rate=2e-3,
    weight_decay=0.0,
    grad_clip_norm=0.0,
    schedule='cosine',
    warmup_steps=0,
  )
  c.weighting_name = 'equal'
  c.weighting = {k: dict(v) for k, v in WEIGHTING_DEFAULTS.items()}
  c.batch_size = 1024
  c.num_epochs = 12
  c.input_mode = 'device'
  c.steps_per_dispatch = 64
  c.eval_batch_size = 8192
  c.eval_every_epochs = 1
  c.select_best = True
  c.num_auc_bins = 2**14
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
  c.parallel = dict(backend='pmap', num_devices=1)
  c.skip_nonfinite = False
  c.max_consecutive_nonfinite = 10
  c.diagnostics_every_steps = 200
  c.population = dict(
    size=0, seeds=(), learning_rates=(), task_weights=(), weighting={}
  )
  c.lock()
  return c
