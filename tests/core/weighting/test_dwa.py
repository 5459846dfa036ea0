"""DWA (Liu et al. 2019) against hand-computed weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.weighting.dwa import dwa


def _feed(method, losses_per_step):
  state = method.init(len(losses_per_step[0]))
  update = jax.jit(method.update)
  out = []
  for k, losses in enumerate(losses_per_step):
    w, state = update(
      jnp.ones(len(losses)), state, losses=jnp.asarray(losses), step=k
    )
    out.append(np.asarray(w))
  return out


def test_ones_until_two_windows_then_the_formula():
  # Window of 2 steps. Window 0 means (1.0, 2.0); window 1 means (0.5, 2.0).
  steps = [[1.0, 3.0], [1.0, 1.0], [0.6, 2.0], [0.4, 2.0], [9.0, 9.0]]
  w = _feed(dwa(temperature=2.0, window_steps=2), steps)
  for k in range(4):
    np.testing.assert_allclose(w[k], [1.0, 1.0])
  # r = (0.5/1.0, 2.0/2.0) = (0.5, 1); w = 2 softmax(r / 2)
  #   = 2 (e^0.25, e^0.5) / (e^0.25 + e^0.5) = (0.8756, 1.1244).
  e = np.exp([0.25, 0.5])
  np.testing.assert_allclose(w[4], 2 * e / e.sum(), rtol=1e-6)
  np.testing.assert_allclose(w[4], [0.87565, 1.12435], rtol=1e-4)
  assert w[4][0] < w[4][1]  # The task whose loss fell faster weighs less.


def test_equal_ratios_give_equal_weights_summing_to_t():
  steps = [[1.0, 2.0, 4.0]] * 3 + [[0.5, 1.0, 2.0]] * 3 + [[1.0] * 3]
  w = _feed(dwa(window_steps=3), steps)
  np.testing.assert_allclose(w[-1], [1.0, 1.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(w[-1].sum(), 3.0, rtol=1e-6)


def test_bad_arguments_are_one_line_errors():
  with pytest.raises(ValueError, match='temperature is 0, expected > 0'):
    dwa(temperature=0)
  with pytest.raises(ValueError, match='window_steps is 0, expected an int'):
    dwa(window_steps=0)
