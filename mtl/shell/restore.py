"""A trained workdir opened again: its settings, model, params and inputs.

Shell code shared by mtl-eval, mtl-predict and mtl-export. A run
is rebuilt from what its workdir recorded, read only (no lock: a live run
may be writing; checkpoints are read as they were committed):

  config.json         the resolved config (model, tasks, eval settings),
                      read by mtl/shell/restored_config.py: the run carries
                      its typed `EvalSettings`
  preprocessing.json  inputs, vocabulary sizes and tasks (mtl.data
                      .preprocessing); a workdir written before it existed
                      loads its dataset instead
  checkpoints_best/   'best' (what results.json reports unless select_best
                      is 'last'); with 'per_task' one params per task,
                      stacked [T, ...]: task t's output is that of params t
  checkpoints/        'latest' or a step number

`make_outputs` is the inference function of them all: the eval step's
forward pass (train=False, each task on its head row), then per task a
probability (sigmoid) or a regression value in the label's units.
"""

import dataclasses
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np

from mtl.core import tasks as tasks_lib
from mtl.core.layers import embedding
from mtl.data import preprocessing
from mtl.errors import CheckpointError
from mtl.shell import (
  build,
  checkpoint,
  members,
  restored_config,
  sharded_restore,
)
from mtl.shell.checkpoint_retention import corrupt_steps
from mtl.shell.restored_config import EvalSettings
from mtl.shell.typed_keys import to_disk


@dataclasses.dataclass
class Run:
  workdir: pathlib.Path
  settings: EvalSettings  # What the tools read of config.json.
  artefact: dict
  tasks: tuple
  model: object
  members: list  # [{'name': ...}]; a single run: [{'name': None}]

  @property
  def is_population(self) -> bool:
    return self.members[0]['name'] is not None


def open_run(workdir, *, dataset=None) -> Run:
  """The run of `workdir`; `dataset` (already loaded) spares a reload when
  the workdir has no preprocessing.json."""
  workdir = pathlib.Path(workdir)
  config = restored_config.read_config(workdir)
  artefact = preprocessing.load(workdir)
  if artefact is None:
    if dataset is None:
      dataset = restored_config.load_dataset(config)
    artefact = restored_config.artefact_of(config, dataset)
  tasks = tuple(
    tasks_lib.Task(t['name'], t['kind'], t['weight'], t['train'], t['head'])
    for t in artefact['tasks']
  )
  shape = types.SimpleNamespace(  # What build.build reads of a Dataset.
    tasks=tasks,
    vocab_sizes=preprocessing.vocab_sizes(artefact),
    dense_names=tuple(artefact['dense_names']),
    sparse_names=tuple(artefact['sparse_names']),
  )
  model, _, _ = build.build(config, shape, total_steps=1)
  n = len(tasks_lib.trained(tasks))
  if members.is_population(config):
    who = members.members_of(config, n)
  else:
    who = [members.single_member(config, n)]
  settings = restored_config.eval_settings(config)
  return Run(workdir, settings, artefact, tasks, model, who)


def abstract_params(run: Run, *, per_task: bool = False):
  example = {
    'dense': jnp.zeros((2, len(run.artefact['dense_names'])), jnp.float32),
    'sparse': jnp.zeros((2, len(run.artefact['sparse_names'])), jnp.int32),
  }
  one = jax.eval_shape(
    lambda: run.model.init(jax.random.key(0), example, train=False)['params']
  )
  if not (run.is_population or per_task):
    return one
  k = len(run.tasks) if per_task else len(run.members)
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct((k, *x.shape), x.dtype), one
  )


def _steps(directory: pathlib.Path) -> list[int]:
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def choose(run: Run, which: str) -> tuple[pathlib.Path, list[int]]:
  """(checkpoint directory, candidate steps newest first) of 'best',
  'latest' or a step number; 'default' is what results.json reports."""
  best, latest = run.workdir / 'checkpoints_best', run.workdir / 'checkpoints'
  if which == 'default':
    which = 'best' if run.settings.mode != 'last' and _steps(best) else 'latest'
  if which in ('best', 'latest'):
    directory = best if which == 'best' else latest
    steps = _steps(directory)[::-1]
    if not steps:
      raise CheckpointError(
        f'{directory} holds no checkpoint, expected the {which} checkpoint '
        'of a trained run (train it with mtl-train first)'
      )
    return directory, steps
  try:
    step = int(which)
  except ValueError:
    raise CheckpointError(
      f'--checkpoint is {which!r}, expected best, latest or a step number'
    ) from None
  for directory in (latest, best):
    if step in _steps(directory):
      return directory, [step]
  raise CheckpointError(
    f'{run.workdir} has no checkpoint of step {step}, expected one of '
    f'{_steps(latest) or "none"} (checkpoints/) or {_steps(best) or "none"} '
    '(checkpoints_best/)'
  )


def restore_params(run: Run, which: str = 'default'):
  """(params, {'checkpoint': directory, 'step': step}) of a checkpoint.

  A corrupt checkpoint (checksums) is skipped for 'best' and 'latest', as
  training's resume does, and an error for a step asked by number. The
  best params of a 'per_task' run are stacked [T, ...], and the second
  value says so ('per_task': True). When nothing restores, the one-line
  CheckpointError gives each step's short reason and, if the other folder
  (checkpoints/ or checkpoints_best/) holds a checkpoint, the --checkpoint
  that reads it.
  """
  directory, steps = choose(run, which)
  per_task = (
    run.settings.mode == 'per_task' and directory.name == 'checkpoints_best'
  )
  abstract = to_disk(abstract_params(run, per_task=per_task))
  ckpt = checkpoint.Checkpointer(directory, read_only=True, async_save=False)
  tables = embedding.lookups(run.model.vocab_sizes, run.model.embed_dim)[1]
  relayout = sharded_restore.Relayout(
    (), {name: rows for name, (rows, _) in tables.items()}
  )
  problems = []
  try:
    for step in steps:
      try:
        # Tables a sharded run split by rows are read whole (one at a time).
        meta = ckpt.read_meta(step)
        full = relayout.reader_abstract(meta, ckpt.saved_tree(step))
        checkpoint.check_compatible(
          full.get('params'), abstract, directory=directory, step=step
        )
        state, _ = ckpt.restore_step(step, full, relayout)
      except checkpoint.CorruptCheckpoint as e:
        problems.append(f'step {step}: {e}')
        continue
      params = jax.tree.map(jnp.asarray, state['params'])
      where = {'checkpoint': str(directory), 'step': int(step)}
      return params, {**where, 'per_task': True} if per_task else where
  finally:
    ckpt.close()
  raise CheckpointError(
    f'{directory}: no checkpoint restores ({"; ".join(problems)})'
    + _other_checkpoint(run, directory)
  )


def _other_checkpoint(run: Run, failed: pathlib.Path) -> str:
  """'; try --checkpoint=latest (...)' when the other checkpoint
  directory than `failed` holds a checkpoint, else ''."""
  which = 'best' if failed.name == 'checkpoints' else 'latest'
  other = run.workdir / (
    'checkpoints_best' if which == 'best' else 'checkpoints'
  )
  steps = [s for s in _steps(other) if s not in corrupt_steps(other)]
  if not steps:
    return ''
  return f'; try --checkpoint={which} (step {steps[-1]} in {other})'


def eval_counts(run: Run, program, params, data, *, per_task: bool = False):
  """The eval program's counts (each [T, ...]) of `params` on `data`; with
  per_task (params stacked [T, ...]) task t's row from params t, as the
  trainer's per-task results."""
  if not per_task:
    return jax.device_get(program(params, data))
  each = [
    jax.device_get(program(jax.tree.map(lambda x, t=t: x[t], params), data))
    for t in range(len(run.tasks))
  ]
  return jax.tree.map(
    lambda *xs: np.stack([x[t] for t, x in enumerate(xs)]), *each
  )


def output_transform(run: Run) -> tuple[np.ndarray, ...]:
  """Per task: (binary?, scale, shift, log1p?) turning a model output into
  a probability or a value in the label's units (table regressions may be
  standardised or log1p'd for training)."""
  binary = np.array([t.kind == 'binary' for t in run.tasks])
  scale, shift = np.ones(len(run.tasks)), np.zeros(len(run.tasks))
  log1p = np.zeros(len(run.tasks), bool)
  if run.artefact['kind'] == 'table':
    specs = run.artefact['schema']['tasks']
    moments = run.artefact['encoding']['labels']
    for i, t in enumerate(run.tasks):
      spec = specs.get(t.name, {})
      if t.kind != 'regression' or t.name not in moments:
        continue
      if spec.get('scale', 'none') in ('center', 'standard'):
        shift[i] = moments[t.name]['mean']
      if spec.get('scale', 'none') == 'standard':
        scale[i] = moments[t.name]['std']
      log1p[i] = spec.get('transform', 'none') == 'log1p'
  return binary, scale, shift, log1p


def make_outputs(run: Run, *, logits: bool = False, per_task: bool = False):
  """`outputs(params, dense, sparse) -> [T, B] f32` (or the eval step's
  logits [T, B], each task on its head row, with logits=True). With
  per_task, params are stacked [T, ...] and row t is params t's task t."""
  rows = np.asarray(tasks_lib.head_rows(run.tasks))
  binary, scale, shift, log1p = (jnp.asarray(a) for a in output_transform(run))
  scale, shift = scale.astype(jnp.float32), shift.astype(jnp.float32)

  def forward(params, dense, sparse):
    return run.model.apply(
      {'params': params}, {'dense': dense, 'sparse': sparse}, train=False
    )[rows]

  def outputs(params, dense, sparse):
    if per_task:  # Each task's own forward pass, as it was evaluated.
      z = jnp.stack(
        [
          forward(jax.tree.map(lambda x, t=t: x[t], params), dense, sparse)[t]
          for t in range(len(run.tasks))
        ]
      )
    else:
      z = forward(params, dense, sparse)
    if logits:
      return z
    value = z * scale[:, None] + shift[:, None]
    value = jnp.where(log1p[:, None], jnp.expm1(value), value)
    return jnp.where(binary[:, None], jax.nn.sigmoid(z), value)

  return outputs


def member_dir(run: Run, j: int) -> pathlib.Path:
  name = run.members[j]['name']
  return run.workdir if name is None else run.workdir / 'members' / name
