"""A new architecture, balancing method and dataset are one definition plus
one registry line each: registered at run time here, they train through the
real command line (`mtl.shell.main`) with no file of mtl touched.

Oracles: the parameter count by hand, the method's weights as logged, the
dataset's step count, and the architecture's signature default recorded in
results.json.
"""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = '''
import sys

import flax.linen as nn
import jax.numpy as jnp

from mtl.core.architectures import ARCHITECTURES
from mtl.core.architectures.base import Backbone
from mtl.core.weighting import WEIGHTINGS
from mtl.core.weighting.base import EmptyState, WeightingMethod
from mtl.data import DATASETS
from mtl.data.synthetic import load_synthetic


class Linear(Backbone):
  """One shared Dense layer: x [B, D] -> z [T, B, width]."""

  num_tasks: int
  width: int = 3

  @nn.compact
  def __call__(self, x, *, train):
    h = nn.Dense(self.width, name='Dense_0')(x)
    return jnp.broadcast_to(h, (self.num_tasks, *h.shape))

  def gradnorm_layer(self):
    return ('backbone', 'Dense_0', 'kernel')


def twice_first(first: float = 2.0) -> WeightingMethod:
  """Task 0 weighted `first`, the others 1."""

  def update(weights, state, **unused):
    return weights.at[0].multiply(first), state

  return WeightingMethod(lambda num_tasks: EmptyState(), update)


def load_tiny(*, n_train: int = 256, seed: int = 0):
  return load_synthetic(
    d=8, m=2, n_train=n_train, n_validation=64, n_test=64, seed=seed
  )


ARCHITECTURES['linear'] = Linear
WEIGHTINGS['twice_first'] = twice_first
DATASETS['tiny'] = load_tiny

from mtl.shell import main

sys.argv = ['mtl-train'] + sys.argv[1:]
main.run()
'''

CONFIG = '''
"""The user's config of the new components.

  python extend.py --config=config.py --workdir=run
"""

from configs import common


def get_config():
  c = common.base_config('linear', 'tiny')
  c.weighting_name = 'twice_first'
  c.towers.hidden = (4,)
  c.batch_size = 64
  c.num_epochs = 2
  c.eval_batch_size = 64
  c.log_every_steps = 2
  c.num_auc_bins = 256
  c.progress_bar = False
  return c
'''


def test_registered_components_train_through_main(tmp_path):
  (tmp_path / 'extend.py').write_text(SCRIPT)
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'tiny.py').write_text(CONFIG)
  workdir = tmp_path / 'run'
  proc = subprocess.run(
    [
      sys.executable,
      str(tmp_path / 'extend.py'),
      f'--config={tmp_path / "configs" / "tiny.py"}',
      f'--workdir={workdir}',
    ],
    capture_output=True,
    text=True,
    timeout=600,
    # `from configs import common`: the repo's configs package.
    env={**__import__('os').environ, 'PYTHONPATH': str(REPO)},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((workdir / 'results.json').read_text())
  assert results['model_name'] == 'linear'
  assert results['model'] == {'width': 3}  # The signature's default.
  # Dense(8 -> 3) + 2 towers of Dense(3 -> 4) and Dense(4 -> 1).
  assert results['num_params'] == (8 * 3 + 3) + 2 * (3 * 4 + 4 + 4 + 1)
  # 256 rows / batch 64 = 4 steps per epoch, 2 epochs.
  assert results['steps'] == 8
  rows = [json.loads(x) for x in (workdir / 'metrics.jsonl').open()]
  weights = [r for r in rows if 'train/weight/y1' in r]
  assert weights and all(
    r['train/weight/y1'] == 2.0 and r['train/weight/y2'] == 1.0 for r in weights
  )
  assert 'test/mse/y1' in results['test']
