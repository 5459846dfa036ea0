"""Fingerprints of the compiled train step, to compare two commits' programs.

  python experiments/compiled_step.py --config=configs/census_mmoe.py
  python experiments/compiled_step.py --repo=<another checkout> ...

Builds the config's train step as experiments/benchmark.py does (the
peer-sized census MMoE by default) and prints a SHA-256 of XLA's optimised
HLO for one step and for one epoch's scanned dispatch, with the source
locations (file names, function names, stack frames) removed. Equal
fingerprints at two commits mean XLA runs the same program at both: any
difference of speed between them is in the Python around the dispatches.
`--repo` imports mtl from another checkout (an older commit in a git
worktree); the script itself only uses APIs both sides have.
"""

import ast
import hashlib
import pathlib
import re
import sys

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_REPO = flags.DEFINE_string('repo', str(REPO), 'Checkout whose mtl to use.')
_CONFIG = flags.DEFINE_string(
  'config', 'configs/census_mmoe.py', 'Config file, relative to --repo.'
)
_PEER_SIZED = flags.DEFINE_bool('peer_sized', True, 'As benchmark.py.')


def normalised(hlo_text: str) -> str:
  """The HLO's computations without source locations."""
  lines = hlo_text.split('\n')
  start = next(
    k for k, line in enumerate(lines) if line.startswith(('%', 'ENTRY'))
  )
  body = '\n'.join(lines[start:])
  return lines[0] + '\n' + re.sub(r',? ?stack_frame_id=\d+', '', body)


def peer_sizes(path: pathlib.Path) -> dict:
  """benchmark.py's PEER_SIZES at --repo, read without importing it (its
  absl flags would clash with these)."""
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Assign) and node.targets[0].id == 'PEER_SIZES':
      call = node.value
      return {k.arg: ast.literal_eval(k.value) for k in call.keywords}
  raise ValueError(f'{path}: no PEER_SIZES = dict(...) found')


def main(argv):
  del argv
  repo = pathlib.Path(_REPO.value).resolve()
  sys.path.insert(0, str(repo))
  import importlib.util

  import jax
  import numpy as np

  from mtl.core import train_state, train_step
  from mtl.data import pipeline
  from mtl.shell import build

  spec = importlib.util.spec_from_file_location('cfg', repo / _CONFIG.value)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  if _PEER_SIZED.value:
    sizes = peer_sizes(repo / 'experiments/benchmark.py')
    config.embedding.dim = sizes['embed_dim']
    config.model.num_experts = sizes['num_experts']
    config.model.expert_hidden = sizes['expert_hidden']
    config.towers.hidden = sizes['tower_hidden']
  dataset = build.load_dataset(config)
  split = dataset.splits['train']
  rows = dataset.num_rows('train')
  spe = pipeline.steps_per_epoch(rows, config.batch_size)
  model, tx, weighting = build.build(config, dataset, spe * config.num_epochs)
  step = train_step.make_train_step(
    model, tx, weighting, dataset.tasks, steps_per_epoch=spe
  )
  example = pipeline.take_rows(split, np.arange(2))
  state = train_state.init_train_state(
    model,
    tx,
    weighting,
    train_step.features_of(example),
    num_tasks=dataset.num_tasks,
    key=jax.random.key(config.seed),
  )
  batch = pipeline.take_rows(split, np.arange(config.batch_size))
  scan = train_step.make_scanned_steps(
    step, batch_size=config.batch_size, num_steps=spe
  )
  perm = jax.numpy.arange(spe * config.batch_size) % rows
  programs = {
    'step': (step, (state, batch)),
    f'scan of {spe} steps': (scan, (state, jax.device_put(split), perm, 0)),
  }
  print(f'mtl from {repo}')
  for name, (fn, args) in programs.items():
    hlo = jax.jit(fn, donate_argnums=0).lower(*args).compile().as_text()
    digest = hashlib.sha256(normalised(hlo).encode()).hexdigest()
    print(f'{name:20s} {digest[:16]}')


if __name__ == '__main__':
  app.run(main)
