"""A new architecture, balancing method, dataset, evaluation metric and
feature kind of the table schema are one definition plus one registry line
each. This module defines them and
registers them in `register()`; naming the module in `config.plugins`
(mtl/shell/plugins.py) registers them in every command-line run, which is
a fresh fork of tests/cli.py's server and so does not inherit this
process's registries: mtl-train, mtl-eval, mtl-predict and mtl-export run
them with no file of mtl touched. This process never registers them (the
contract tests are parameterised over the registries).

Oracles: the parameter count by hand; the method's weights as logged; the
step count of the dataset's rows; the architecture's signature default
recorded in results.json; the metric's value recomputed by numpy on
mtl-predict's outputs; the exported model (mtl/serving.py, no plugin
loaded) against mtl-predict; the feature kind's ids against numpy's
digitize, and its table size by hand.
"""

import dataclasses
import json

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from configs import common
from mtl import serving
from mtl.core.architectures import ARCHITECTURES
from mtl.core.architectures.base import Backbone
from mtl.core.layers.embedding import Column
from mtl.core.metrics_registry import METRICS, Metric
from mtl.core.weighting import WEIGHTINGS
from mtl.core.weighting.base import EmptyState, WeightingMethod
from mtl.data import DATASETS
from mtl.data.encoding import FIRST_ID, OOV_ID
from mtl.data.feature_kinds import FEATURE_KINDS
from mtl.data.kinds.base import Kind
from mtl.data.schema import Spec
from mtl.data.synthetic import load_synthetic
from mtl.data.table_files import numbers
from mtl.errors import ConfigError
from mtl.shell import validate
from tests import cli

PLUGIN = 'tests.test_extension'


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


def median_abs_error(y, z) -> float:
  """A regression's median absolute error."""
  return float(np.median(np.abs(z - y)))


@dataclasses.dataclass(frozen=True)
class Bucket(Spec):
  """A numeric column cut at `boundaries` into one categorical id."""

  name: str
  column: str
  boundaries: tuple[float, ...] = ()
  embed_dim: int = 0


class BucketKind(Kind):
  """Ids: 0 padding, 1 an empty value, 2 + the bucket (x < b0: the first,
  b_i <= x < b_i+1, ..., b_last <= x: the last)."""

  spec = Bucket

  def check(self, where, fields):
    b = fields.get('boundaries', ())
    if (
      not b
      or any(isinstance(x, bool) or not isinstance(x, int | float) for x in b)
      or list(b) != sorted(set(b))
    ):
      raise ConfigError(
        f'{where}.boundaries is {b!r}, expected increasing numbers'
      )
    return {**fields, 'boundaries': tuple(float(x) for x in b)}

  def inputs(self, f, schema):
    return [], [f.name]

  def embedding(self, f, schema, encoding):
    size = FIRST_ID + len(f.boundaries) + 1
    return Column(size, feature=f.name, dim=f.embed_dim)

  def encode(self, f, rows):
    path = rows.source.path
    x = numbers(rows.chunk, f.column, rows.offsets, path, missing='zero')
    bucket = np.searchsorted(np.asarray(f.boundaries), x, side='right')
    ids = np.where(np.isnan(x), OOV_ID, FIRST_ID + bucket)
    return [], [ids[:, None].astype(np.int32)]


def register() -> None:
  """The registry lines (called by mtl.shell.plugins.load)."""
  ARCHITECTURES['linear'] = Linear
  WEIGHTINGS['twice_first'] = twice_first
  DATASETS['tiny'] = load_tiny
  METRICS['median_ae'] = Metric(
    median_abs_error, kinds=('regression',), score='output'
  )
  FEATURE_KINDS['bucket'] = BucketKind()


CONFIG = f'''
"""The user's config of the new components: configs/smoke.py's sizes."""

from configs import common, smoke


def get_config():
  c = common.base_config('linear', 'tiny', plugins=({PLUGIN!r},))
  s = smoke.get_config()
  c.embedding.dim = s.embedding.dim
  c.towers.hidden = s.towers.hidden
  for key in (
    'batch_size', 'num_epochs', 'steps_per_dispatch', 'eval_batch_size',
    'log_every_steps', 'progress_bar', 'diagnostics_every_steps',
  ):
    c[key] = s[key]
  c.weighting_name = 'twice_first'
  c.eval_metrics = ('median_ae', 'mae')
  return c
'''


def _run(module, *args):
  proc = cli.run(args, module=module, env=cli.one_device_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_registered_components_train_evaluate_predict_export(tmp_path):
  assert 'linear' not in ARCHITECTURES  # Only the runs register them.
  config, workdir = tmp_path / 'tiny.py', tmp_path / 'run'
  config.write_text(CONFIG)
  _run('mtl.shell.main', f'--config={config}', f'--workdir={workdir}')
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

  # The validation rows as a file of labelled rows ('encoded': by column).
  ds = load_tiny()
  split = ds.splits['validation']
  frame = pd.DataFrame(split['dense'], columns=list(ds.dense_names))
  for t, task in enumerate(ds.tasks):
    frame[task.name] = split['labels'][t]
  rows_file = tmp_path / 'rows.parquet'
  frame.to_parquet(rows_file)

  _run('mtl.shell.evaluate', f'--workdir={workdir}', f'--split={rows_file}')
  (written,) = workdir.glob('eval_rows_*.json')
  metrics = json.loads(written.read_text())['metrics']
  host = {k for k in metrics if k.split('/')[1] in ('median_ae', 'mae')}
  assert host == {
    f'eval/{m}/{t}' for m in ('median_ae', 'mae') for t in 'y1 y2'.split()
  }
  assert not any('/ece/' in k or '/xauc/' in k for k in metrics)

  preds = tmp_path / 'preds.parquet'
  _run(
    'mtl.shell.predict',
    f'--workdir={workdir}',
    f'--input={rows_file}',
    f'--output={preds}',
  )
  predicted = pd.read_parquet(preds)
  for task in ds.tasks:
    z = predicted[task.name].to_numpy(np.float64)
    y = frame[task.name].to_numpy(np.float64)
    want = np.median(np.abs(z - y))
    assert metrics[f'eval/median_ae/{task.name}'] == pytest.approx(want, 1e-6)
    want = np.mean(np.abs(z - y))
    assert metrics[f'eval/mae/{task.name}'] == pytest.approx(want, 1e-6)

  out = tmp_path / 'exported'
  _run('mtl.shell.export', f'--workdir={workdir}', f'--out={out}')
  served = serving.load(out).predict(
    split['dense'], np.zeros((len(frame), 0), np.int32)
  )
  for task in ds.tasks:
    np.testing.assert_allclose(
      served[task.name], predicted[task.name], rtol=1e-6, atol=1e-6
    )


BOUNDARIES = (2.5, 5.0, 7.5)

TABLE_CONFIG = '''
"""The user's config of a table with a bucket feature: configs/smoke.py's
sizes."""

from configs import common, smoke


def get_config():
  c = common.base_config('mmoe', 'table', plugins=({plugin!r},))
  s = smoke.get_config()
  for key in (
    'batch_size', 'num_epochs', 'steps_per_dispatch', 'eval_batch_size',
    'log_every_steps', 'progress_bar', 'diagnostics_every_steps',
  ):
    c[key] = s[key]
  c.embedding.dim = s.embedding.dim
  c.towers.hidden = s.towers.hidden
  c.model.update(num_experts=2, expert_hidden=(8,))
  c.dataset.path = {path!r}
  c.dataset.data_dir = {data_dir!r}
  c.dataset.features = {{
    'user': {{'kind': 'categorical'}},
    'x_bucket': {{'kind': 'bucket', 'column': 'x', 'boundaries': {bounds!r}}},
  }}
  c.dataset.tasks = {{'click': {{'label': 'click'}}, 'buy': {{'label': 'buy'}}}}
  return c
'''


def _table(n: int, seed: int) -> pd.DataFrame:
  """Rows whose click follows the bucket of x; x empty in some rows."""
  rng = np.random.default_rng(seed)
  x = np.round(rng.uniform(0, 10, n), 2)
  click = (rng.random(n) < np.where(x > 5, 0.8, 0.2)).astype(int)
  frame = pd.DataFrame(
    {
      'user': [f'u{u}' for u in rng.integers(0, 20, n)],
      'x': x,
      'click': click,
      'buy': click & (rng.random(n) < 0.5),
    }
  )
  frame['x'] = frame['x'].astype(object)
  frame.loc[rng.random(n) < 0.05, 'x'] = None
  return frame


def test_registered_feature_kind_trains_evaluates_predicts_exports(
  tmp_path, monkeypatch
):
  assert 'bucket' not in FEATURE_KINDS  # Only the runs register it.
  data, rows_file = tmp_path / 'log.csv', tmp_path / 'rows.csv'
  _table(1200, 0).to_csv(data, index=False)
  rows = _table(200, 1)
  rows.to_csv(rows_file, index=False)
  config, workdir = tmp_path / 'bucket.py', tmp_path / 'run'
  config.write_text(
    TABLE_CONFIG.format(
      plugin=PLUGIN, path=str(data), data_dir=str(tmp_path / 'tfds'),
      bounds=BOUNDARIES,
    )
  )  # fmt: skip
  _run('mtl.shell.main', f'--config={config}', f'--workdir={workdir}')
  artefact = json.loads((workdir / 'preprocessing.json').read_text())
  assert artefact['sparse_names'] == ['user', 'x_bucket']
  # Padding, empty, and one id per bucket: len(boundaries) + 1 of them.
  assert artefact['vocab_sizes'][1]['size'] == 2 + len(BOUNDARIES) + 1

  _run('mtl.shell.evaluate', f'--workdir={workdir}', f'--split={rows_file}')
  (written,) = workdir.glob('eval_rows_*.json')
  metrics = json.loads(written.read_text())['metrics']
  assert 'eval/auc/click' in metrics
  preds = tmp_path / 'preds.parquet'
  _run(
    'mtl.shell.predict',
    f'--workdir={workdir}',
    f'--input={rows_file}',
    f'--output={preds}',
  )
  predicted = pd.read_parquet(preds)
  assert len(predicted) == len(rows)
  out = tmp_path / 'exported'
  _run('mtl.shell.export', f'--workdir={workdir}', f'--out={out}')

  text = pd.read_csv(rows_file, dtype=str, keep_default_na=False)
  text = text[['user', 'x']].replace('', None)
  with pytest.raises(ConfigError, match=r"x_bucket\.kind is 'bucket'"):
    serving.load(out).predict_rows(text)  # A serving process registers it.
  monkeypatch.setitem(FEATURE_KINDS, 'bucket', BucketKind())
  model = serving.load(out)
  x = rows['x'].to_numpy(np.float64)
  want = np.where(np.isnan(x), 1, 2 + np.digitize(x, BOUNDARIES))
  np.testing.assert_array_equal(model.encode(text)['sparse'][:, 1], want)
  served = model.predict_rows(text)
  for task in ('click', 'buy'):
    np.testing.assert_allclose(
      served[task], predicted[task], rtol=1e-6, atol=1e-6
    )


def test_unknown_metric_or_plugin_is_one_line():
  config = common.base_config('mmoe', 'synthetic')
  config.eval_metrics = ('ece', 'gacu')
  with pytest.raises(ConfigError) as e:
    validate.check_config(config)
  assert str(e.value) == (
    "eval_metrics[1] 'gacu' is not one of xauc, mae, ece, predicted_mean, "
    "observed_rate, gauc (did you mean 'gauc'?)"
  )
  config.eval_metrics = ('ece',)
  config.plugins = ('no_such_plugin_module',)
  with pytest.raises(ConfigError, match=r"^plugins\[0\] 'no_such_plugin"):
    validate.check_config(config)
