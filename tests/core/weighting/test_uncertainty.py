"""Uncertainty weighting (Kendall et al. 2018) against hand-derived answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.weighting.uncertainty import uncertainty

LOSSES = jnp.array([0.3, 2.0])


def _run(method, losses, steps):
  state = method.init(len(losses))
  update = jax.jit(method.update)
  for k in range(steps):
    w, state = update(jnp.ones(len(losses)), state, losses=losses, step=k)
  return w, state


@pytest.mark.parametrize(
  'form, want',
  [
    # d/ds [0.5 e^-s L + 0.5 s] = 0  =>  s* = log L.
    ('regression', np.log([0.3, 2.0])),
    # d/ds [e^-s L + 0.5 s] = 0  =>  s* = log 2L.
    ('classification', np.log([0.6, 4.0])),
  ],
)
def test_constant_losses_converge_to_the_optimum(form, want):
  w, state = _run(uncertainty(form, learning_rate=0.05), LOSSES, 3000)
  np.testing.assert_allclose(state.log_vars, want, atol=2e-2)
  # At the optimum the weight is c e^-s*: 0.5/L or 1/(2L), both 1/(2L).
  np.testing.assert_allclose(w, 0.5 / np.asarray(LOSSES), rtol=5e-2)


def test_first_update_is_one_adam_step_and_weights_use_the_current_s():
  method = uncertainty('regression', learning_rate=0.1)
  w, state = method.update(jnp.ones(2), method.init(2), losses=LOSSES, step=0)
  # s = 0: this step's weights are 0.5 e^0.
  np.testing.assert_allclose(w, [0.5, 0.5])
  # g = -0.5 L + 0.5 = (0.35, -0.5); Adam's first step is -lr * sign(g).
  np.testing.assert_allclose(state.log_vars, [-0.1, 0.1], rtol=1e-4)


def test_per_task_forms_and_incoming_weights():
  method = uncertainty(('regression', 'classification'), init=np.log(2.0))
  w, _ = method.update(
    jnp.array([2.0, 3.0]), method.init(2), losses=LOSSES, step=0
  )
  # e^-s = 1/2: (2 * 0.5 * 0.5, 3 * 1 * 0.5).
  np.testing.assert_allclose(w, [0.5, 1.5], rtol=1e-6)


def test_equal_losses_give_equal_finite_positive_weights():
  w, _ = _run(uncertainty('classification'), jnp.full((3,), 0.7), 50)
  assert np.isfinite(w).all() and (w > 0).all()
  np.testing.assert_allclose(w, w[0], rtol=1e-6)


def test_bad_arguments_are_one_line_errors():
  with pytest.raises(ValueError, match="forms has 'regresion', expected"):
    uncertainty('regresion')
  with pytest.raises(ValueError, match='learning_rate is -1.0, expected > 0'):
    uncertainty(learning_rate=-1.0)
  with pytest.raises(
    ValueError, match="'uncertainty': 1 forms for 2 tasks, expected 2"
  ):
    uncertainty(('regression',)).init(2)
