"""Every config key's type and range, checked before any work (shell code).

`check_config(config)` is the first thing `trainer.train` does, before the
workdir is opened and before any data is read: a wrong value fails in
about a second, as one `ConfigError` line naming the key, what was found
and what was expected (`optimizer.learning_rate is nan, expected a finite
number > 0`), instead of after a data preparation or a compile.

Which keys: the fixed keys of configs/common.py, the chosen architecture's
`model.<key>`, the chosen method's `weighting.<method>.<key>` and the
values of `population.weighting.<key>`, and the dataset's `dataset.<key>`.
Keywords of other architectures and methods are unused, so they are not
checked; keys no component takes are reported where they are resolved
(keywords.resolve_model, build.load_dataset), with a suggestion.

Each rule lives once, here or with what it checks; check_config asks:
- Fixed keys: the table `_FIXED` of config_rules.Rule (counts >= 1,
  intervals >= 0 where 0 means 'off' or 'at epoch ends', num_auc_bins >= 2,
  the optimizer's ranges, the types of flags and strings), and the
  enumerations against the modules that own their values:
  optim.OPTIMIZERS and SCHEDULES, sparse.SPARSE_OPTIMIZERS
  (optimizer.sparse.method), parallel.BACKENDS, writers.WANDB_MODES, and
  the registries and build.INPUT_MODES through build.check_names.
  towers.hidden may be empty (a tower straight to its logit, as
  tests/core/test_model.py builds); its entries are widths >= 1. eval_metrics:
  metrics_registry.check_names. config.plugins are loaded first (plugins.py).
- Across keys: a weight_decay only with 'adamw'; the wide optimizer and
  embedding L2 (optim); profile.steps (profiling); task_loss
  (tasks.task_loss_pairs); numeric (model.check_numeric); select_best with
  early stopping (selection.check); bagging only in a population;
  init_from must hold checkpoints/; two towers and wide crosses
  (validate_model.py).
- Component keywords (architecture, weighting method, dataset loader):
  types from their signatures, ranges from their names, and the weighting
  method constructed (validate_keywords.py).
"""

import pathlib

from mtl.core import metrics_registry, optim, parallel, precision, sparse
from mtl.core import model as model_lib
from mtl.core import tasks as tasks_lib
from mtl.core.architectures import ARCHITECTURES
from mtl.core.layers import interactions, numeric
from mtl.data import DATASETS
from mtl.errors import ConfigError
from mtl.shell import (
  build,
  members,
  plugins,
  profiling,
  selection,
  sharding,
  validate_keywords,
  validate_model,
  writers,
)
from mtl.shell.config_rules import Rule, check, count, get

_FIXED = {
  'seed': Rule('int'),
  'batch_size': count(),
  'num_epochs': count(),
  'steps_per_dispatch': count(),
  'eval_batch_size': count(),
  'eval_every_epochs': count(),
  'log_every_steps': count(),
  'max_consecutive_nonfinite': count(),
  'num_auc_bins': count(2),
  'eval_metrics': Rule('tuple', each=Rule('str')),  # names: check_config
  'plugins': Rule('any'),  # plugins.load, first in check_config
  'diagnostics_every_steps': count(0),
  'embedding.dim': count(),
  'embedding.dtype': Rule('choice', choices=tuple(precision.EMBEDDING_DTYPES)),
  # A tower may have no hidden layer: backbone output -> Dense(1).
  'towers.hidden': Rule('tuple', each=count()),
  'towers.dropout': Rule('probability'),
  'optimizer.name': Rule('choice', choices=tuple(optim.OPTIMIZERS)),
  'optimizer.learning_rate': Rule('float', 0, strict=True),
  'optimizer.weight_decay': Rule('float', 0),
  'optimizer.grad_clip_norm': Rule('float', 0),
  'optimizer.schedule': Rule('choice', choices=optim.SCHEDULES),
  'optimizer.warmup_steps': count(0),
  # Sparse embedding updates; table names are checked against the model's
  # tables when it is built (optim.sparse_tables).
  'optimizer.sparse.tables': Rule('tuple', each=Rule('str'), optional=True),
  'optimizer.sparse.min_rows': Rule('int', 0, optional=True),  # 0: off
  'optimizer.sparse.method': Rule(
    'choice', choices=tuple(sparse.SPARSE_OPTIMIZERS), optional=True
  ),
  'optimizer.sparse.ftrl.beta': Rule('float', 0, optional=True),
  'optimizer.sparse.ftrl.l1': Rule('float', 0, optional=True),
  'optimizer.sparse.ftrl.l2': Rule('float', 0, optional=True),
  # The wide part's optimizer and L2 on touched embedding rows; the
  # pairs of embedding_l2_tables are checked in check_config (optim).
  'optimizer.wide.name': Rule('choice', choices=optim.WIDE_OPTIMIZERS),
  'optimizer.wide.learning_rate': Rule('float', 0, strict=True),
  'optimizer.wide.l1': Rule('float', 0),
  'optimizer.wide.l2': Rule('float', 0),
  'optimizer.wide.beta': Rule('float', 0),
  'optimizer.embedding_l2': Rule('float', 0),
  'optimizer.embedding_l2_tables': Rule(
    'tuple', each=Rule('tuple', each=Rule('any'))
  ),  # (table, lambda) pairs: optim.embedding_l2_of
  # Wide & Deep and crosses (mtl/core/layers/wide.py, interactions.py);
  # cross feature names are checked when the model sees the data.
  'wide.enabled': Rule('bool'),
  'wide.dense': Rule('bool'),
  'wide.crosses': Rule('tuple', each=Rule('tuple', each=Rule('str'))),
  'wide.cross_buckets': count(),
  'interaction': Rule('choice', choices=interactions.INTERACTIONS),
  'cross.num_layers': count(),
  'cross.low_rank': count(0),  # 0: full rank
  # The dense columns' embedding (layers/numeric.py); its ranges and the
  # architectures it suits: model.check_numeric.
  'numeric.embedding': Rule('choice', choices=numeric.EMBEDDINGS),
  'numeric.frequencies': count(),
  'numeric.dim': count(),
  'numeric.sigma': Rule('float', 0, strict=True),
  # The backbone's and towers' compute dtype (mtl/core/precision.py).
  'precision': Rule('choice', choices=tuple(precision.PRECISIONS)),
  'select_best': Rule('choice', choices=selection.MODES, bools=True),
  # (task, value) pairs; names, values: tasks_lib.task_loss_pairs.
  **{
    f'task_loss.{key}': Rule('tuple', each=Rule('tuple', each=Rule('any')))
    for key in tasks_lib.LOSS_DEFAULTS
  },
  'early_stopping.patience': count(0),  # 0: off
  'progress_bar': Rule('bool'),
  'wandb.mode': Rule('choice', choices=writers.WANDB_MODES),
  'wandb.project': Rule('str'),
  'wandb.entity': Rule('str', optional=True),
  'wandb.group': Rule('str', optional=True),
  'wandb.name': Rule('str', optional=True),
  'wandb.tags': Rule('tuple', each=Rule('str')),
  'checkpoint.every_steps': count(0),  # 0: at every epoch end
  'checkpoint.max_to_keep': count(),
  'checkpoint.async_save': Rule('bool'),
  'init_from': Rule('str', optional=True),
  'workdir_allow_changes': Rule('bool'),
  'parallel.num_devices': count(0),  # 0: every device
  # Missing in a workdir recorded before the keys: nothing split.
  'parallel.sharding.rows': Rule('tuple', each=Rule('str'), optional=True),
  'parallel.sharding.min_bytes': Rule('int', 0, optional=True),  # 0: off
  'skip_nonfinite': Rule('bool'),
  'divergence_factor': Rule('float', 0),  # 0: off
  'stop_on_divergence': Rule('bool'),
  'profile.steps': Rule('str'),  # 'A:B' or '': profiling.parse_steps
  'population.size': count(0),  # 0: as many as the lists give
  'population.seeds': Rule('tuple', each=Rule('int')),
  'population.bagging': Rule('bool'),
  'population.learning_rates': Rule(
    'tuple', each=Rule('float', 0, strict=True)
  ),
  'population.task_weights': Rule(
    'tuple', each=Rule('tuple', each=Rule('float', 0), nonempty=True)
  ),
}
# Keys checked elsewhere in check_config: names, and the component sections.
NAMED = ('dataset_name', 'model_name', 'weighting_name', 'input_mode')
SECTIONS = ('dataset', 'model', 'weighting', 'population.weighting')


def check_config(config) -> None:
  """Raises a one-line ConfigError on the first wrong key of `config`."""
  plugins.load(get(config, 'plugins'))  # Before the names they register.
  for key in NAMED:
    check(key, get(config, key), Rule('str'))
  build.check_names(config)
  parallel.check_backend(get(config, 'parallel.backend'))
  for key, rule in _FIXED.items():
    check(key, get(config, key), rule)
  metrics_registry.check_names(config.eval_metrics)
  profiling.parse_steps(get(config, 'profile.steps'))  # 'A:B', 0 <= A < B
  name = config.model_name
  validate_keywords.check_section(config, 'model', ARCHITECTURES[name])
  validate_model.check_two_tower(config)
  validate_model.check_wide(config)
  model_lib.check_numeric(get(config, 'numeric'), name)
  tasks_lib.task_loss_pairs(get(config, 'task_loss'))  # names: at load
  validate_keywords.check_weighting(config)
  validate_keywords.check_section(
    config, 'dataset', DATASETS[config.dataset_name]
  )
  opt = config.optimizer
  if opt.weight_decay and opt.name != 'adamw':
    raise ConfigError(
      f'optimizer.weight_decay is {opt.weight_decay} with optimizer '
      f"{opt.name!r}, expected 0, or >= 0 with 'adamw'"
    )
  optim.wide_optimizer(opt.wide.to_dict())  # l1 only with 'ftrl'.
  optim.embedding_l2_of(opt.embedding_l2, opt.embedding_l2_tables, None)
  if get(config, 'population.bagging') and not members.is_population(config):
    raise ConfigError(
      'population.bagging is True without a population, expected '
      'population.size or per-member lists (bagging resamples per member)'
    )
  sharding.check_request(
    build.sharding_request(config),
    backend=config.parallel.backend,
    num_devices=config.parallel.num_devices,
    population=members.is_population(config),
  )
  selection.check(
    config.select_best,
    config.early_stopping.patience,
    population=members.is_population(config),
  )
  init_from = get(config, 'init_from')
  if init_from and not (pathlib.Path(init_from) / 'checkpoints').is_dir():
    raise ConfigError(
      f'init_from {init_from} holds no checkpoints/ directory, expected the '
      'workdir of an earlier run'
    )
