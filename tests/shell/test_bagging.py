"""Bagging: per-example loss weights and Poisson bootstrap weights."""

import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core import losses
from mtl.core.tasks import Task

TASKS = (Task('a', 'binary'), Task('b', 'regression'))


def test_weighted_loss_is_the_loss_of_repeated_rows():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 9)).astype(np.float32)
  labels = np.stack([rng.integers(0, 2, 9), rng.normal(size=9)]).astype(
    np.float32
  )
  mask = (rng.random((2, 9)) > 0.2).astype(np.float32)
  w = np.array([0, 1, 2, 3, 1, 0, 1, 4, 1], np.float32)
  sums, counts = losses.masked_loss_sums(
    logits, labels, mask, tasks=TASKS, weights=jnp.asarray(w)
  )
  rep = np.repeat(np.arange(9), w.astype(int))
  want_s, want_c = losses.masked_loss_sums(
    logits[:, rep], labels[:, rep], mask[:, rep], tasks=TASKS
  )
  np.testing.assert_allclose(sums, want_s, rtol=1e-5)
  np.testing.assert_allclose(counts, want_c)


def test_no_weights_is_unchanged_and_nan_in_dropped_rows_never_leaks():
  logits = np.array([[0.5, np.nan], [1.0, np.inf]], np.float32)
  labels = np.ones((2, 2), np.float32)
  mask = np.ones((2, 2), np.float32)
  sums, counts = losses.masked_loss_sums(
    logits, labels, mask, tasks=TASKS, weights=jnp.asarray([2.0, 0.0])
  )
  one, _ = losses.masked_loss_sums(
    logits[:, :1], labels[:, :1], mask[:, :1], tasks=TASKS
  )
  np.testing.assert_allclose(sums, 2 * np.asarray(one), rtol=1e-6)
  np.testing.assert_array_equal(counts, [2.0, 2.0])


def test_poisson_weights_mean_one_deterministic_and_per_member():
  from mtl.core import bagging

  a = bagging.poisson_weights(7, 0, 200_000)
  assert a.dtype == np.float32 and abs(a.mean() - 1) < 0.01
  assert abs(a.var() - 1) < 0.02 and abs((a == 0).mean() - np.exp(-1)) < 0.01
  np.testing.assert_array_equal(a, bagging.poisson_weights(7, 0, 200_000))
  b = bagging.poisson_weights(7, 1, 200_000)  # Same seed, next member.
  c = bagging.poisson_weights(8, 0, 200_000)
  assert (a != b).mean() > 0.5 and (a != c).mean() > 0.5
  assert abs(np.corrcoef(a, b)[0, 1]) < 0.01


def _config(**population):
  from configs import smoke

  c = smoke.get_config()
  c.checkpoint.async_save = False
  c.num_epochs = 1
  c.diagnostics_every_steps = 0
  c.eval_batch_size = 128
  with c.unlocked():
    for k, v in population.items():
      c.population[k] = v
  return c


def test_bagged_population_trains_each_member_on_its_own_resample(tmp_path):
  from mtl.shell import trainer

  def vals(result):
    return [m['validation'] for m in result['members']]

  bagged = vals(
    trainer.train(_config(seeds=(0, 0), bagging=True), tmp_path / 'bag')
  )
  # One seed: without bagging the members are the same model (the
  # population tests); with it each member has its own resample.
  assert bagged[0] != bagged[1]
  # Host batches carry the same weights as device-resident data.
  c = _config(seeds=(0, 0), bagging=True)
  c.input_mode = 'host'
  host = vals(trainer.train(c, tmp_path / 'host'))
  for h, d in zip(host, bagged, strict=True):
    for k in d:
      assert h[k] == pytest.approx(d[k], rel=1e-4, abs=1e-5), k


def test_bagging_needs_a_population(tmp_path):
  from mtl.errors import ConfigError
  from mtl.shell import trainer

  with pytest.raises(ConfigError, match='population.bagging'):
    trainer.train(_config(bagging=True), tmp_path / 'x')
