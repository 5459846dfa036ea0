"""GradNorm (Chen et al. 2018, Algorithm 1) against hand-derived updates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.weighting.gradnorm import gradnorm


def test_two_updates_equal_the_hand_computed_ones():
  method = gradnorm(alpha=1.0, learning_rate=0.1, optimizer='sgd')
  state = method.init(2)
  norms = jnp.array([1.0, 3.0])
  # Step 1: w = (1, 1), L = L(0) = (1, 1) so r = (1, 1). G = w * n = (1, 3),
  # Gbar = 2, target = (2, 2). dL_grad/dw = sign(G - target) * n = (-1, 3).
  # SGD: w = (1.1, 0.7), sum 1.8, renormalised to 2: (1.2222, 0.7778).
  w, state = method.update(
    jnp.ones(2), state, losses=jnp.array([1.0, 1.0]), task_grad_norms=norms
  )
  np.testing.assert_allclose(w, [1.0, 1.0])  # This step's weights: w(0).
  np.testing.assert_allclose(state.weights, [11 / 9, 7 / 9], rtol=1e-6)
  # The task below its target (task 0: G 1 < 2) gained weight.
  # Step 2: L = (0.5, 1), L/L(0) = (0.5, 1), r = (2/3, 4/3).
  # G = (11/9, 21/9), Gbar = 16/9, target = Gbar * r = (32/27, 64/27).
  # G - target = (+1/27, -1/27): gradient (+1, -3).
  # SGD: w = (11/9 - 0.1, 7/9 + 0.3) = (1.1222, 1.0778), sum 2.2 -> *2/2.2.
  w, state = method.update(
    jnp.ones(2), state, losses=jnp.array([0.5, 1.0]), task_grad_norms=norms
  )
  np.testing.assert_allclose(w, [11 / 9, 7 / 9], rtol=1e-6)
  want = np.array([11 / 9 - 0.1, 7 / 9 + 0.3]) * 2 / 2.2
  np.testing.assert_allclose(state.weights, want, rtol=1e-5)
  np.testing.assert_allclose(state.initial_losses, [1.0, 1.0])


def test_given_initial_losses_are_used_from_the_first_step():
  method = gradnorm(
    alpha=1.0, learning_rate=0.1, optimizer='sgd', initial_losses=(0.5, 2.0)
  )
  # L/L(0) = (2, 0.5): r = (1.6, 0.4); G = (1, 1), target = (1.6, 0.4):
  # gradient (-1, +1), w = (1.1, 0.9), already summing to 2.
  _, state = method.update(
    jnp.ones(2),
    method.init(2),
    losses=jnp.array([1.0, 1.0]),
    task_grad_norms=jnp.array([1.0, 1.0]),
  )
  np.testing.assert_allclose(state.weights, [1.1, 0.9], rtol=1e-6)


def test_alpha_zero_equalises_the_weighted_norms():
  method = gradnorm(alpha=0.0, learning_rate=0.01)
  state = method.init(3)
  update = jax.jit(method.update)
  norms = jnp.array([1.0, 2.0, 4.0])
  losses = jnp.array([0.7, 0.2, 1.3])
  for k in range(2000):
    w, state = update(
      jnp.ones(3), state, losses=losses, task_grad_norms=norms, step=k
    )
  g = np.asarray(state.weights) * np.asarray(norms)
  np.testing.assert_allclose(g, g.mean(), rtol=0.05)
  np.testing.assert_allclose(np.sum(state.weights), 3.0, rtol=1e-5)


@pytest.mark.parametrize('norms', [[1e12, 1e-12], [0.0, 0.0], [0.0, 5.0]])
def test_weights_stay_finite_positive_and_sum_to_t(norms):
  method = gradnorm(learning_rate=0.5, optimizer='sgd')
  state = method.init(2)
  for k in range(20):
    w, state = method.update(
      jnp.ones(2),
      state,
      losses=jnp.array([1.0, 0.1 + k]),
      task_grad_norms=jnp.asarray(norms),
    )
    assert np.isfinite(w).all() and (w > 0).all()
    np.testing.assert_allclose(np.sum(state.weights), 2.0, rtol=1e-5)


def test_equal_norms_and_losses_keep_equal_weights():
  method = gradnorm()
  state = method.init(3)
  for _ in range(5):
    w, state = method.update(
      jnp.ones(3),
      state,
      losses=jnp.full((3,), 0.4),
      task_grad_norms=jnp.full((3,), 2.0),
    )
  np.testing.assert_allclose(w, [1.0, 1.0, 1.0], rtol=1e-6)


def test_bad_arguments_are_one_line_errors():
  with pytest.raises(ValueError, match='alpha is -1, expected >= 0'):
    gradnorm(alpha=-1)
  with pytest.raises(ValueError, match='learning_rate is 0, expected > 0'):
    gradnorm(learning_rate=0)
  with pytest.raises(ValueError, match="optimizer is 'adagrad', expected"):
    gradnorm(optimizer='adagrad')
  with pytest.raises(ValueError, match='initial_losses'):
    gradnorm(initial_losses=(1.0, 0.0))
  with pytest.raises(ValueError, match="'gradnorm': 3 initial_losses for 2"):
    gradnorm(initial_losses=(1.0, 1.0, 1.0)).init(2)
