"""Optimizer construction: schedules by hand, bad values as one-line errors."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl.core import optim


def test_cosine_schedule_matches_the_formula():
  lr = optim.make_schedule(0.01, 'cosine', warmup_steps=10, total_steps=110)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(5)), 0.005, rtol=1e-6)
  np.testing.assert_allclose(float(lr(10)), 0.01, rtol=1e-6)
  # Half way through the decay: 0.01 * (1 + cos(pi / 2)) / 2.
  want = 0.01 * (1 + math.cos(math.pi * 50 / 100)) / 2
  np.testing.assert_allclose(float(lr(60)), want, rtol=1e-5)
  assert float(lr(110)) == pytest.approx(0.0, abs=1e-9)


def test_constant_schedule_with_warmup():
  lr = optim.make_schedule(0.1, 'constant', warmup_steps=4, total_steps=100)
  np.testing.assert_allclose(
    [float(lr(s)) for s in (0, 2, 4, 50)], [0.0, 0.05, 0.1, 0.1], rtol=1e-6
  )


def test_adam_step_size_is_the_learning_rate():
  # Adam's first update is -lr * sign(g) (bias-corrected m / sqrt(v)).
  tx = optim.make_optimizer('adam', 0.01)
  params = {'w': jnp.array([1.0, -2.0])}
  grads = {'w': jnp.array([3.0, -0.5])}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], [-0.01, 0.01], rtol=1e-4)


@pytest.mark.parametrize(
  'kwargs,message',
  [
    (dict(name='adom'), "optimizer.name 'adom' is not one of"),
    (dict(learning_rate=-0.1), 'optimizer.learning_rate is -0.1'),
    (dict(learning_rate=0.0), 'optimizer.learning_rate is 0.0'),
    (dict(weight_decay=0.1), "weight_decay is 0.1 with optimizer 'adam'"),
    (dict(schedule='linear'), "optimizer.schedule is 'linear'"),
    (dict(warmup_steps=500, total_steps=100), 'warmup_steps is 500'),
    (dict(grad_clip_norm=-1.0), 'grad_clip_norm is -1.0'),
  ],
)
def test_bad_optimizer_values(kwargs, message):
  with pytest.raises(ValueError, match=message):
    optim.make_optimizer(**kwargs)


def test_grad_clipping_bounds_the_update():
  tx = optim.make_optimizer('sgd', 1.0, grad_clip_norm=1.0)
  params = {'w': jnp.zeros(2)}
  updates, _ = tx.update({'w': jnp.array([30.0, 40.0])}, tx.init(params))
  np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-6)
