"""Known answers for the balancing methods, and the WEIGHTINGS contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.weighting import WEIGHTINGS, chain
from mtl.core.weighting.base import VECTOR, init_state
from mtl.core.weighting.fixed import fixed
from mtl.core.weighting.scheduled import scheduled

BASE = jnp.ones((3,), jnp.float32)
LOSSES = jnp.array([0.7, 0.2, 1.3])


@pytest.mark.parametrize('name', sorted(WEIGHTINGS))
def test_contract_equal_losses_give_finite_positive_weights(name):
  method = WEIGHTINGS[name]()
  state = init_state(method, 3, 4)
  update = jax.jit(method.update)
  # Equal inputs of every kind a method may ask for: identical gradients.
  extra = {
    'task_grad_norms': jnp.full((3,), 2.0),
    'task_grad_gram': jnp.full((3, 3), 4.0),
    'task_grads': jnp.full((3, 4), 1.0),
    'task_grads_parts': jnp.full((3, 3, 4), 1.0),
  }
  extra = {k: v for k, v in extra.items() if k in method.needs}
  for step in range(3):
    weights, state = update(
      BASE, state, losses=jnp.full((3,), 0.5), step=step, epoch=step, **extra
    )
    if method.combines_gradients == VECTOR:  # Combined(weights, gradient)
      weights = weights.weights
    w = np.asarray(weights)
    assert w.shape == (3,)
    assert np.isfinite(w).all() and (w > 0).all()
    # Equal losses and no preference given: equal weights (RLW's are
    # random by design; tests/core/weighting/test_rlw.py checks their mean).
    if name != 'rlw':
      np.testing.assert_allclose(w, w[0], rtol=1e-5)


def test_fixed_multiplies_base_weights():
  method = fixed((1.0, 0.5, 2.0))
  w, _ = method.update(
    jnp.array([1.0, 2.0, 1.0]), method.init(3), losses=LOSSES, step=0, epoch=0
  )
  np.testing.assert_allclose(w, [1.0, 1.0, 2.0])


def test_fixed_rejects_wrong_length_and_bad_values():
  with pytest.raises(ValueError, match="'fixed': 2 weights for 3 tasks"):
    fixed((1.0, 1.0)).init(3)
  with pytest.raises(ValueError, match='must be non-negative'):
    fixed((1.0, -1.0))


def test_scheduled_is_w0_times_gamma_to_the_epoch():
  method = scheduled(weights=(1.0, 2.0, 0.5), gammas=(0.9, 1.0, 1.1))
  state = method.init(3)
  for epoch in (0, 1, 4):
    w, state = method.update(
      BASE, state, losses=LOSSES, step=epoch * 10, epoch=epoch
    )
    want = np.array([1.0 * 0.9**epoch, 2.0, 0.5 * 1.1**epoch])
    np.testing.assert_allclose(w, want, rtol=1e-6)


def test_scheduled_rejects_bad_gammas():
  with pytest.raises(ValueError, match="'scheduled': 2 gammas for 3 tasks"):
    scheduled(gammas=(1.0, 1.0)).init(3)
  with pytest.raises(ValueError, match='must be > 0'):
    scheduled(gammas=(1.0, 0.0, 1.0))


def test_chain_composes_in_order():
  method = chain(fixed((2.0, 1.0, 1.0)), scheduled(gammas=(0.5, 0.5, 2.0)))
  w, _ = method.update(BASE, method.init(3), losses=LOSSES, step=0, epoch=2)
  np.testing.assert_allclose(w, [0.5, 0.25, 4.0])
