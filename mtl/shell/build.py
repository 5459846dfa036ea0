"""What a config builds: the dataset, the model, the optimizer, the weighting
method and the devices (shell code).

These builders unpack a ConfigDict into keyword arguments of the pure
builders of mtl/core and mtl/data, which never see one, so a wrong key fails
at construction with the key's name. The names are checked here
(`check_names`); every other value's type and range is validate.py's, which
`trainer.train` runs first: a config built by hand should pass
validate.check_config before it reaches `build`.
"""

import dataclasses
import time

import jax
import ml_collections
from jax.experimental import multihost_utils

from mtl.core import optim, parallel, precision
from mtl.core import tasks as tasks_lib
from mtl.core.architectures import ARCHITECTURES
from mtl.core.architectures.base import input_sets
from mtl.core.layers import embedding
from mtl.core.model import make_model
from mtl.core.weighting import WEIGHTINGS
from mtl.data import DATASETS, prepared, streaming
from mtl.errors import ConfigError, did_you_mean
from mtl.shell import keywords, members, sharding

INPUT_MODES = ('device', 'host', 'stream')


def _choose(kind: str, name: str, options) -> None:
  if name not in options:
    hint = did_you_mean(name, options)
    raise ConfigError(
      f'unknown {kind} {name!r}: expected one of '
      f'{", ".join(sorted(options))}{hint}'
    )


def check_names(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any data is read, on an unknown name in the config."""
  _choose('dataset', config.dataset_name, DATASETS)
  _choose('model', config.model_name, ARCHITECTURES)
  _choose('weighting', config.weighting_name, WEIGHTINGS)
  _choose('input_mode', config.input_mode, INPUT_MODES)
  if config.input_mode == 'stream':
    streaming.check_streamable(config.dataset_name)
    if members.is_population(config):
      raise ConfigError(
        "input_mode is 'stream' with a population, expected a single run "
        "(a population trains on input_mode 'device' or 'host')"
      )


def load_dataset(config: ml_collections.ConfigDict):
  """The config's dataset, in the task layout its model trains on.

  With several processes, process 0 loads first (preparing the TFDS cache if
  it is missing) and the others wait for it, then read that cache: processes
  sharing one data directory never prepare it side by side.
  """
  _choose('dataset', config.dataset_name, DATASETS)
  multi, chief = jax.process_count() > 1, jax.process_index() == 0
  if multi and not chief:
    multihost_utils.sync_global_devices('mtl: dataset prepared')
  loader = DATASETS[config.dataset_name]
  kwargs = config.dataset.to_dict()
  foreign = sorted(set(kwargs) - set(keywords.keywords(loader)))
  if foreign:
    raise ConfigError(
      f'dataset.{foreign[0]} is not a keyword of {config.dataset_name!r}: '
      'the config was built for another dataset; start from a config of '
      f'this one (common.base_config(model, {config.dataset_name!r}))'
    )
  if config.input_mode == 'stream':
    # The training split stays on disk: process 0 writes its row file.
    dataset = streaming.load_streaming(kwargs, write=chief)
  else:
    dataset = loader(**kwargs)
  if multi and chief:
    multihost_utils.sync_global_devices('mtl: dataset prepared')
  prepared.forget_builders()  # TFDS would keep the vocabularies alive.
  tasks = tasks_lib.with_task_loss(dataset.tasks, config.get('task_loss'))
  if tasks != dataset.tasks:  # config.task_loss: binary tasks' own losses
    dataset = dataclasses.replace(dataset, tasks=tasks)
  # Entire-space models (ESMM, AITM) re-target a click/conversion dataset.
  adapted = ARCHITECTURES[config.model_name].adapt_dataset(dataset)
  if config.input_mode == 'stream' and adapted is not dataset:
    raise ConfigError(
      f"input_mode is 'stream' with model {config.model_name!r}, which "
      "re-targets the dataset's tasks in memory; expected input_mode "
      "'host' or 'device' for it"
    )
  return adapted


def prepare_dataset(config, beam_options: tuple[str, ...] | None) -> dict:
  """mtl-prepare: `config`'s dataset prepared (on Apache Beam with
  `beam_options`, pipeline flags) or found prepared; its prepared
  directory, rows per split and seconds."""
  check_names(config)
  loader = DATASETS[config.dataset_name]
  kwargs = config.dataset.to_dict()
  if beam_options:
    if 'beam_options' not in keywords.keywords(loader):
      raise ConfigError(
        f'--beam_option is set for dataset {config.dataset_name!r}, which '
        'is not prepared by the table builder; expected a table dataset '
        "('table' or a config built on it)"
      )
    kwargs['beam_options'] = tuple(beam_options)
  start = time.perf_counter()
  dataset = loader(**kwargs)
  prepared.forget_builders()
  return {
    'prepared_dir': dataset.stats.get('prepared_dir'),
    'rows': {s: int(a['labels'].shape[1]) for s, a in dataset.splits.items()},
    'seconds': time.perf_counter() - start,
  }


def make_weighting(config: ml_collections.ConfigDict):
  _choose('weighting', config.weighting_name, WEIGHTINGS)
  kwargs = config.weighting.get(config.weighting_name)
  kwargs = {} if kwargs is None else kwargs.to_dict()
  return WEIGHTINGS[config.weighting_name](**kwargs)


def _section(config, key: str) -> dict | None:
  section = config.get(key)
  return None if section is None else section.to_dict()


def build(
  config: ml_collections.ConfigDict,
  dataset,
  total_steps: int,
  devices: list | None = None,
):
  """Model, optimizer and weighting method of a config, for a dataset.

  `devices`: those of a data-parallel run (`parallel_devices`), over which
  the tables of config.parallel.sharding are split by rows (the optimizer
  a SparseTables with them `sharded`, mtl/shell/sharding.py).
  """
  _choose('input_mode', config.input_mode, INPUT_MODES)
  model = make_model(
    config.model_name,
    keywords.resolve_model(config, ARCHITECTURES),
    num_tasks=tasks_lib.num_heads(dataset.tasks),
    vocab_sizes=tuple(dataset.vocab_sizes),
    embed_dim=config.embedding.dim,
    tower_hidden=tuple(config.towers.hidden),
    tower_dropout=config.towers.dropout,
    # Two towers split the embedded features by name (input_layout).
    feature_names=tuple(dataset.dense_names) + tuple(dataset.sparse_names),
    # Wide & Deep and feature crosses; a workdir recorded before these keys
    # existed has none of them: the plain model.
    wide=_section(config, 'wide'),
    interaction=config.get('interaction', 'none'),
    cross=_section(config, 'cross'),
    numeric=_section(config, 'numeric'),
    precision=config.get('precision', 'float32'),
    embedding_dtype=config.embedding.get('dtype', 'float32'),
  )
  # Sparse embedding updates (optimizer.sparse) choose among these tables.
  _, tables = embedding.lookups(model.vocab_sizes, model.embed_dim)
  opt = config.optimizer.to_dict()
  split = ()
  request = sharding_request(config)
  if devices is not None and request.requested:
    split = sharding.plan(request, tables, len(devices)).sharded
  if split and input_sets(model.backbone) is not None:
    raise ConfigError(
      f'parallel.sharding splits {", ".join(split)} with model '
      f'{config.model_name!r}, whose backbone keeps a table per task; '
      'expected a model with one set of tables'
    )
  if split:  # A split table is updated sparsely (sharding.py).
    chosen = set(opt['sparse'].get('tables', ())) | set(split)
    opt['sparse'] = {**opt['sparse'], 'tables': tuple(sorted(chosen))}
  tx = optim.make_optimizer(**opt, total_steps=total_steps, table_shapes=tables)
  if split:
    tx = tx._replace(sharded=split)
    # Each device draws its own rows of a split table (layers/embedding.py).
    model = model.clone(row_blocks=tuple((n, len(devices)) for n in split))
  if model.embedding_dtype != 'float32':  # float32 moments (precision.py)
    tx = precision.float32_moments(tx)
  if config.skip_nonfinite:  # max_consecutive_nonfinite >= 1: validate.py
    tx = optim.if_finite(tx, config.max_consecutive_nonfinite)
  weighting = make_weighting(config)
  # Validates per-task lengths up front; methods see the trained tasks.
  weighting.init(len(tasks_lib.trained(dataset.tasks)))
  return model, tx, weighting


def sharding_request(config) -> sharding.Request:
  """What config.parallel.sharding asks (a workdir recorded before the key
  existed: nothing split)."""
  s = config.parallel.get('sharding')
  s = {} if s is None else s.to_dict()
  return sharding.Request(
    rows=tuple(s.get('rows') or ()),
    min_bytes=int(s.get('min_bytes') or 0),
    sparse=config.optimizer.sparse.to_dict(),
    optimizer=config.optimizer.name,
    embedding_dtype=config.embedding.get('dtype', 'float32'),
  )


def parallel_devices(config) -> list | None:
  """The devices of a data-parallel run, or None for the plain jit step.

  `parallel.num_devices`: 1 (default) runs the ordinary single-device step;
  0 takes every device of every process; N > 1 the first N (one process).
  """
  parallel.check_backend(config.parallel.backend)
  n, total = config.parallel.num_devices, jax.device_count()
  if not 0 <= n <= total:
    raise ConfigError(
      f'parallel.num_devices is {n}, expected 0 (all) or 1..{total} (the '
      'devices this run sees)'
    )
  if jax.process_count() > 1 and n not in (0, total):
    raise ConfigError(
      f'parallel.num_devices is {n} with {jax.process_count()} processes, '
      f'expected 0 or {total}: a multi-process run uses every device'
    )
  n = total if n == 0 else n
  if n == 1 and jax.process_count() == 1:
    return None
  if config.input_mode not in ('host', 'stream'):
    raise ConfigError(
      f'input_mode is {config.input_mode!r} with {n} devices, expected '
      "'host' or 'stream': data-parallel runs take host batches (set "
      '--config.input_mode=host)'
    )
  parallel.check_divisible(config.batch_size, n)
  parallel.check_divisible(config.eval_batch_size, n, 'eval_batch_size')
  return jax.devices()[:n]
