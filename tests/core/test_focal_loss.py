"""Rare-label losses: positive-class weight and focal loss, and their keys.

Oracles: numpy float64 formulas written from Lin et al., "Focal Loss for
Dense Object Detection", ICCV 2017 (eq. 5 with p_t and alpha_t as in
Sec. 3.1-3.2; the gradient of Appendix B), the weighted BCE written out,
and optax's BCE for the bits of the default loss.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import entire_space as es_config
from mtl.core import losses, train_step
from mtl.core import tasks as tasks_lib
from mtl.core.tasks import Task
from mtl.data import schema_parse
from mtl.errors import ConfigError
from mtl.shell import build, validate

# Moderate and extreme logits (float32 sigmoid saturates past ~17 and ~88).
LOGITS = np.array(
  [-1e4, -90.0, -30.0, -5.0, -0.7, 0.0, 0.3, 2.0, 17.0, 40.0, 90.0, 1e4],
  np.float32,
)


def _log_p(z):
  """log sigmoid(z) in float64, stable for any z."""
  return -np.logaddexp(0.0, -z)


def focal_oracle(z, y, gamma, alpha, pos_weight=1.0):
  """Eq. 5 of Lin et al.: -alpha_t (1 - p_t)^gamma log(p_t), per example;
  positives times pos_weight."""
  z = z.astype(np.float64)
  log_pt = np.where(y == 1, _log_p(z), _log_p(-z))  # p_t: p or 1 - p
  one_minus_pt = np.exp(np.where(y == 1, _log_p(-z), _log_p(z)))
  if alpha is None:
    alpha_t = np.ones_like(z)
  else:
    alpha_t = np.where(y == 1, alpha, 1 - alpha)
  w = np.where(y == 1, pos_weight, 1.0)
  return -w * alpha_t * one_minus_pt**gamma * log_pt


def focal_grad_oracle(z, y, gamma):
  """Appendix B: dFL/dx = y (1 - p_t)^gamma (gamma p_t log p_t + p_t - 1),
  y in {-1, 1}, p_t = sigmoid(y x) (alpha_t = 1)."""
  ys = np.where(y == 1, 1.0, -1.0)
  z = z.astype(np.float64)
  log_pt = _log_p(ys * z)
  pt = np.exp(log_pt)
  return ys * (1 - pt) ** gamma * (gamma * pt * log_pt + pt - 1)


def _both_labels():
  z = np.concatenate([LOGITS, LOGITS])
  y = np.concatenate([np.ones_like(LOGITS), np.zeros_like(LOGITS)])
  return z, y


@pytest.mark.parametrize(
  'gamma,alpha,pos_weight',
  [
    (0.5, None, 1.0),
    (1.0, 0.25, 1.0),
    (2.0, 0.25, 1.0),
    (2.0, None, 4.0),
    (5.0, 0.75, 1.0),
    (0.0, 0.25, 1.0),
  ],
)
def test_focal_loss_matches_eq5_in_float64(gamma, alpha, pos_weight):
  z, y = _both_labels()
  got = losses.binary_loss(
    jnp.asarray(z),
    jnp.asarray(y),
    pos_weight=pos_weight,
    gamma=gamma,
    alpha=alpha,
  )
  got = np.asarray(got, np.float64)
  want = focal_oracle(z, y, gamma, alpha, pos_weight)
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12)
  # A well-classified example is down-weighted: at z = 2 a positive's loss
  # is the BCE times (1 - p)^gamma = 0.1192^gamma (alpha_t = 1, w = 1).
  if alpha is None and pos_weight == 1.0:
    bce = np.log1p(np.exp(-2.0))
    i = list(LOGITS).index(2.0)
    assert got[i] == pytest.approx(bce * (1 / (1 + np.e**2)) ** gamma, 1e-6)


@pytest.mark.parametrize('gamma', [0.5, 2.0, 5.0])
def test_focal_gradient_is_appendix_b_and_finite(gamma):
  z, y = _both_labels()
  grad = jax.grad(
    lambda x: losses.binary_loss(x, jnp.asarray(y), gamma=gamma).sum()
  )(jnp.asarray(z))
  grad = np.asarray(grad, np.float64)
  assert np.isfinite(grad).all()
  np.testing.assert_allclose(
    grad, focal_grad_oracle(z, y, gamma), rtol=1e-5, atol=1e-6
  )


def test_pos_weight_is_the_weighted_bce():
  rng = np.random.default_rng(0)
  z = rng.normal(0, 3, 64).astype(np.float32)
  y = (rng.random(64) < 0.2).astype(np.float32)
  tasks = (Task('comment', pos_weight=5.0),)
  got = losses.elementwise_losses(z[None], y[None], tasks=tasks)[0]
  p = 1 / (1 + np.exp(-z.astype(np.float64)))
  want = -(5.0 * y * np.log(p) + (1 - y) * np.log(1 - p))
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=1e-7)
  # Extreme logits stay finite (log_sigmoid, not log of a rounded p).
  big = losses.elementwise_losses(LOGITS[None], np.ones((1, 12)), tasks=tasks)
  assert np.isfinite(np.asarray(big)).all()
  assert float(big[0, 0]) == pytest.approx(5e4, rel=1e-6)


def test_defaults_are_optax_bce_bit_for_bit():
  rng = np.random.default_rng(1)
  z = np.concatenate([rng.normal(0, 4, 500), LOGITS]).astype(np.float32)
  y = (rng.random(z.size) < 0.3).astype(np.float32)
  old = np.asarray(optax.sigmoid_binary_cross_entropy(z, y))
  plain = (Task('a'), Task('b', focal_gamma=0.0, pos_weight=1.0))
  fn = jax.jit(lambda z, y: losses.elementwise_losses(z, y, tasks=plain))
  got = np.asarray(fn(np.stack([z, z]), np.stack([y, y])))
  assert np.array_equal(got[0], old) and np.array_equal(got[1], old)
  direct = np.asarray(jax.jit(losses.binary_loss)(z, y))
  assert np.array_equal(direct, old)


def test_training_loss_is_focal_and_the_metric_loss_plain():
  rng = np.random.default_rng(2)
  z = rng.normal(0, 2, (2, 32)).astype(np.float32)
  y = (rng.random((2, 32)) < 0.3).astype(np.float32)
  mask = np.ones((2, 32), np.float32)
  mask[:, -5:] = 0
  tasks = (Task('a', focal_gamma=2.0, focal_alpha=0.25), Task('b'))
  train, n = losses.masked_loss_sums(z, y, mask, tasks=tasks)
  metric, _ = losses.masked_loss_sums(z, y, mask, tasks=tasks, metric=True)
  keep = mask[0] > 0
  want = focal_oracle(z[0][keep], y[0][keep], 2.0, 0.25).sum()
  assert float(train[0]) == pytest.approx(want, rel=1e-5)
  bce = np.asarray(optax.sigmoid_binary_cross_entropy(z, y))
  assert float(metric[0]) == pytest.approx(bce[0][keep].sum(), rel=1e-6)
  assert float(train[1]) == float(metric[1]) and float(n[0]) == 27


class _Linear(nn.Module):
  """A two-output linear model: logits [T=2, B]."""

  @nn.compact
  def __call__(self, x, *, train):
    return nn.Dense(2)(x['dense']).T


def test_the_eval_step_reports_the_plain_bce():
  rng = np.random.default_rng(3)
  batch = {
    'dense': rng.normal(size=(16, 3)).astype(np.float32),
    'sparse': np.zeros((16, 0), np.int32),
    'labels': (rng.random((2, 16)) < 0.5).astype(np.float32),
    'mask': np.ones((2, 16), np.float32),
  }
  model = _Linear()
  params = model.init(jax.random.key(0), batch, train=False)['params']
  tasks = (Task('a', pos_weight=3.0, focal_gamma=1.0), Task('b'))
  counts = train_step.make_eval_step(model, tasks, num_bins=64)(params, batch)
  z = np.asarray(model.apply({'params': params}, batch, train=False))
  y = batch['labels'].astype(np.float64)
  bce = np.logaddexp(0, z) - y * z  # Plain BCE of the logits, float64.
  np.testing.assert_allclose(np.asarray(counts['loss_sum']), bce.sum(1), 1e-5)


def _parse(entry):
  return schema_parse.parse({'x': {'kind': 'dense'}}, {'t': entry}).tasks[0]


def test_table_task_keys_reach_the_core_task():
  spec = _parse(
    {'label': 'y', 'pos_weight': 5, 'focal_gamma': 2.0, 'focal_alpha': 0.25}
  )
  task = tasks_lib.task_of(spec, {'t': {'mean': 0.1, 'std': 0.3}})
  assert (task.pos_weight, task.focal_gamma, task.focal_alpha) == (
    5.0,
    2.0,
    0.25,
  )
  assert task.label_std == 1.0 and not task.plain_loss
  plain = tasks_lib.task_of(_parse({'label': 'y'}), {'t': {'std': 2.0}})
  assert plain == Task('t') and plain.plain_loss


@pytest.mark.parametrize(
  'entry,message',
  [
    (
      {'label': 'y', 'pos_weight': -1.0},
      'dataset.tasks.t.pos_weight is -1.0, expected a number > 0',
    ),
    (
      {'label': 'y', 'pos_weight': True},
      'dataset.tasks.t.pos_weight is True, expected a number > 0',
    ),
    (
      {'label': 'y', 'focal_gamma': -0.5},
      'dataset.tasks.t.focal_gamma is -0.5, expected a number >= 0',
    ),
    (
      {'label': 'y', 'focal_alpha': 1.0},
      'dataset.tasks.t.focal_alpha is 1.0, expected None or a number in (0, 1)',
    ),
    (
      {'label': 'y', 'kind': 'regression', 'focal_gamma': 2.0},
      'dataset.tasks.t.focal_gamma is 2.0 on a regression task, expected it '
      'only on a binary task',
    ),
    (
      {'label': 'y', 'kind': 'weighted_logistic', 'pos_weight': 2.0},
      'dataset.tasks.t.pos_weight is 2.0 on a weighted_logistic task, '
      'expected it only on a binary task',
    ),
  ],
)
def test_bad_loss_keys_are_one_line(entry, message):
  with pytest.raises(ConfigError) as e:
    _parse(entry)
  assert str(e.value) == message


def test_core_task_checks_its_loss_fields():
  with pytest.raises(ConfigError, match=r"task 'c'.focal_alpha is 0"):
    Task('c', focal_alpha=0)
  with pytest.raises(ConfigError, match='on a regression task'):
    Task('r', 'regression', pos_weight=2.0)
  assert Task('r', 'regression', label_std=2.5).plain_loss


def test_config_task_loss_reaches_the_trained_tasks():
  """config.task_loss on a dataset without a schema (entire_space), through
  build.load_dataset; ESMM's ctcvr trains with the conversion task's loss."""
  config = es_config.get_config('esmm')
  config.dataset.update(
    dict(n_train=256, n_validation=64, n_test=64, num_items=20)
  )
  config.task_loss.focal_gamma = (('conversion', 2.0),)
  config.task_loss.pos_weight = (('click', 3.0),)
  validate.check_config(config)
  tasks = {t.name: t for t in build.load_dataset(config).tasks}
  assert tasks['click'].pos_weight == 3.0 and tasks['click'].focal_gamma == 0
  assert tasks['ctcvr'].focal_gamma == 2.0 and tasks['ctcvr'].train
  assert tasks['conversion'].focal_gamma == 2.0
  assert not tasks['conversion'].train


@pytest.mark.parametrize(
  'task_loss,message',
  [
    (
      {'pos_weight': (('click', 0.0),)},
      "task_loss.pos_weight['click'] is 0.0, expected a number > 0",
    ),
    (
      {'focal_alpha': (('click', 1.5),)},
      "task_loss.focal_alpha['click'] is 1.5, expected None or a number in "
      '(0, 1)',
    ),
    (
      {'focal_gamma': ('click',)},
      "task_loss.focal_gamma[0] is 'click' (a string), expected a tuple",
    ),
    (
      {'focal_gamma': ((2.0, 'click'),)},
      "task_loss.focal_gamma holds (2.0, 'click'), expected (task name, "
      'value) pairs',
    ),
  ],
)
def test_bad_task_loss_is_one_line(task_loss, message):
  config = es_config.get_config('esmm').to_dict()
  config['task_loss'].update(task_loss)
  with pytest.raises(ConfigError) as e:
    validate.check_config(ml_collections.ConfigDict(config))
  assert str(e.value) == message


def test_task_loss_names_and_kinds_are_checked_against_the_tasks():
  tasks = (Task('click'), Task('dwell', 'regression'))
  with pytest.raises(ConfigError) as e:
    tasks_lib.with_task_loss(tasks, {'pos_weight': (('clik', 2.0),)})
  assert str(e.value) == (
    "task_loss.pos_weight names task 'clik', expected one of ['click', 'dwell']"
  )
  with pytest.raises(ConfigError) as e:
    tasks_lib.with_task_loss(tasks, {'focal_gamma': (('dwell', 2.0),)})
  assert str(e.value) == (
    "task_loss.focal_gamma['dwell'] is 2.0 on a regression task, expected "
    'it only on a binary task'
  )
  empty = {'pos_weight': (), 'focal_gamma': (), 'focal_alpha': ()}
  assert tasks_lib.with_task_loss(tasks, empty) == tasks
