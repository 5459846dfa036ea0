"""ESMM, AITM and the entire-space data, against hand-derived answers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import roc_auc_score

from mtl.core import tasks as tasks_lib
from mtl.core import train_state, train_step, weighting
from mtl.core.architectures import aitm, esmm
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.data.dataset import Dataset
from mtl.data.entire_space import auc, load_entire_space


def test_ctcvr_logit_is_the_product_of_probabilities_even_at_extremes():
  a = np.array([-60.0, -5.0, 0.0, 3.0, 40.0, 60.0, -60.0])
  b = np.array([-60.0, 2.0, 0.0, -3.0, 40.0, -60.0, 60.0])
  z = np.asarray(esmm.ctcvr_logit(jnp.asarray(a), jnp.asarray(b)), np.float64)
  assert np.isfinite(z).all()
  # log sigmoid(z) == log sigmoid(a) + log sigmoid(b), in float64 numpy.
  log_sig = lambda x: -np.logaddexp(0.0, -x)  # noqa: E731
  np.testing.assert_allclose(
    log_sig(z), log_sig(a) + log_sig(b), rtol=1e-5, atol=1e-5
  )


def tiny_dataset(click, conv, conv_mask):
  n = len(click)
  split = {
    'dense': np.zeros((n, 1), np.float32),
    'sparse': np.zeros((n, 0), np.int32),
    'labels': np.asarray([click, conv], np.float32),
    'mask': np.asarray([np.ones(n), conv_mask], np.float32),
  }
  return Dataset(
    name='tiny',
    tasks=(Task('click'), Task('buy')),
    dense_names=('x',),
    sparse_names=(),
    vocab_sizes=(),
    splits={'train': split},
  )


def test_esmm_adapts_a_click_conversion_dataset():
  click = [1, 1, 0, 0, 1]
  buy = [1, 0, 0, 0, 1]
  ds = esmm.adapt_dataset(tiny_dataset(click, buy, click))
  assert [t.name for t in ds.tasks] == ['click', 'ctcvr', 'buy']
  assert [t.train for t in ds.tasks] == [True, True, False]
  a = ds.splits['train']
  np.testing.assert_array_equal(a['labels'][1], [1, 0, 0, 0, 1])
  np.testing.assert_array_equal(a['mask'][1], np.ones(5))  # entire space
  np.testing.assert_array_equal(a['mask'][2], click)  # CVR on clicks
  assert tasks_lib.head_rows(ds.tasks) == (0, 1, 2)


def test_entire_space_models_reject_a_conversion_task_over_impressions():
  click = [1, 0, 1, 0]
  with pytest.raises(ValueError, match='must live in the click sample space'):
    esmm.adapt_dataset(tiny_dataset(click, [1, 0, 0, 0], np.ones(4)))
  with pytest.raises(ValueError, match='must live in the click sample space'):
    aitm.adapt_dataset(tiny_dataset(click, [1, 0, 0, 0], np.ones(4)))


def test_aitm_calibrator_by_hand():
  backbone = aitm.AITM(num_tasks=3, hidden=(4,), calibration=0.5)
  logits = jnp.log(jnp.asarray([[0.2, 0.5], [0.3, 0.1], [0.4, 0.2]]))
  logits = logits - jnp.log1p(-jnp.exp(logits))  # probabilities -> logits
  got = np.asarray(backbone.extra_losses(logits))
  # y = [[.2,.5],[.3,.1],[.4,.2]]: 0.5*max(y_t - y_{t-1}, 0).
  want = [[0, 0], [0.05, 0], [0.05, 0.05]]
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_ait_attention_by_hand():
  rng = np.random.default_rng(0)
  u = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
  module = aitm.AIT()
  params = module.init(jax.random.key(0), u)['params']
  out = np.asarray(module.apply({'params': params}, u))

  def dense(name, x):
    return x @ np.asarray(params[name]['kernel']) + np.asarray(
      params[name]['bias']
    )

  x = np.asarray(u)
  score = (dense('query', x) * dense('key', x)).sum(-1) / 2.0  # sqrt(4)
  w = np.exp(score) / np.exp(score).sum(0)
  want = (w[..., None] * dense('value', x)).sum(0)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_esmm_step_trains_click_and_ctcvr_only():
  ds = esmm.adapt_dataset(
    load_entire_space(n_train=64, n_validation=200, n_test=200, seed=1)
  )
  tasks = ds.tasks
  assert [t.name for t in tasks] == ['click', 'ctcvr', 'conversion', 'cvr_all']
  model = make_model(
    'esmm',
    {'hidden': (4,)},
    num_tasks=tasks_lib.num_heads(tasks),
    vocab_sizes=ds.vocab_sizes,
    embed_dim=2,
    tower_hidden=(),
  )
  tx = optax.sgd(0.1)
  method = weighting.WEIGHTINGS['equal']()
  batch = {k: jnp.asarray(v) for k, v in ds.splits['train'].items()}
  feats = train_step.features_of(batch)
  state = train_state.init_train_state(
    model, tx, method, feats, num_tasks=2, key=jax.random.key(0)
  )
  step = train_step.make_train_step(model, tx, method, tasks, steps_per_epoch=1)
  new, metrics = jax.jit(step)(state, batch)  # Eager: one compile per op.
  assert metrics['loss'].shape == (2,)

  # Oracle: plain BCE of click and of click & conversion over all rows.
  def loss(p):
    out = model.apply({'params': p}, feats, train=True)
    ctr = optax.sigmoid_binary_cross_entropy(out[0], batch['labels'][0])
    y = batch['labels'][0] * batch['labels'][2]  # click & conversion
    ctcvr = optax.sigmoid_binary_cross_entropy(out[1], y)
    return ctr.mean() + ctcvr.mean(), (ctr.mean(), ctcvr.mean())

  oracle = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (_, parts), grads = oracle(state.params)
  np.testing.assert_allclose(metrics['loss'], parts, rtol=1e-5)
  want = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, grads)
  for a, b in zip(
    jax.tree.leaves(new.params), jax.tree.leaves(want), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_auc_matches_sklearn_with_ties():
  rng = np.random.default_rng(3)
  s = rng.integers(0, 5, 300).astype(float)
  y = rng.random(300) < 0.3
  assert auc(s, y) == pytest.approx(roc_auc_score(y, s))


def test_entire_space_generator_hits_its_rates_and_is_deterministic():
  ds = load_entire_space(
    n_train=100_000, n_validation=1000, n_test=1000, seed=4
  )
  train = ds.splits['train']
  click = train['labels'][0]
  assert click.mean() == pytest.approx(0.1, abs=0.005)
  latent = train['labels'][2]
  assert latent[click > 0].mean() == pytest.approx(0.2, abs=0.015)
  np.testing.assert_array_equal(train['mask'][1], click)  # CVR space
  np.testing.assert_array_equal(train['labels'][1], latent * click)
  # The clicked rows are a biased sample: conversion differs off them.
  assert abs(latent[click == 0].mean() - latent[click > 0].mean()) > 0.02
  assert 0.6 < ds.stats['oracle_auc']['train'] < 1.0
  assert 0.6 < ds.stats['oracle_ctr_auc']['train'] < 1.0
  again = load_entire_space(
    n_train=100_000, n_validation=1000, n_test=1000, seed=4
  )
  for k in train:
    np.testing.assert_array_equal(train[k], again.splits['train'][k])
