"""GLS (Chennupati et al. 2019) against a float64 reference from the paper.

The reference differentiates the paper's loss (prod_t L_t)^(1/T) in float64
by complex steps, with no use of mtl's closed form; mtl's weights must
be within 1e-5 relative.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.weighting.gls import gls

RTOL = 1e-5
METHOD = gls()


@functools.cache
def _update():
  return jax.jit(METHOD.update)


def run(losses, weights=None):
  t = len(losses)
  w, _ = _update()(
    jnp.ones(t) if weights is None else jnp.asarray(weights, jnp.float32),
    METHOD.init(t),
    losses=jnp.asarray(losses, jnp.float32),
    step=0,
    epoch=0,
  )
  return np.asarray(w, np.float64)


def gls_loss(losses):
  """The paper's L_GLS = (prod_t L_t)^(1/T), float64."""
  losses = np.asarray(losses)
  return np.prod(losses) ** (1.0 / len(losses))


def reference_weights(losses):
  """d L_GLS / d L_t by complex steps: Im L_GLS(L + i h e_t) / h, exact to
  float64 rounding."""
  out = []
  for t in range(len(losses)):
    x = np.asarray(losses, np.complex128)
    x[t] += 1e-30j
    out.append(gls_loss(x).imag / 1e-30)
  return np.array(out)


CASES = {
  'equal': [0.5, 0.5],
  'two': [0.7, 0.2],
  'near_equal': [0.5, 0.5000001],
  'scaled_100x': [0.01, 1.0],
  'spread_1e4': [1e-3, 10.0],
  'three': [0.7, 0.2, 1.3],
  'five': [0.31, 0.05, 2.4, 0.9, 0.66],
  'six_logspace': list(np.logspace(-2, 2, 6)),
  'eight_tiny': list(1e-4 * np.arange(1, 9)),
  'large': [50.0, 200.0, 75.0],
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_weights_are_the_gradient_of_the_geometric_mean(name):
  losses = CASES[name]
  want = reference_weights(losses)
  got = run(losses)
  np.testing.assert_allclose(got, want, rtol=RTOL)
  # Euler: L_GLS is homogeneous of degree 1, so sum_t w_t L_t = L_GLS.
  np.testing.assert_allclose(got @ losses, gls_loss(losses), rtol=RTOL)


def test_by_hand():
  # L = (1, 4): L_GLS = 2, w = 2 / (2 (1, 4)) = (1, 0.25).
  np.testing.assert_allclose(run([1.0, 4.0]), [1.0, 0.25], rtol=1e-6)
  # Equal losses: w_t = 1 / T whatever the loss.
  np.testing.assert_allclose(run([0.3] * 4), [0.25] * 4, rtol=1e-6)


def test_weights_do_not_change_with_the_scale_of_all_losses():
  losses = np.array(CASES['five'])
  np.testing.assert_allclose(run(100 * losses), run(losses), rtol=RTOL)


def test_incoming_weights_multiply():
  losses = CASES['three']
  got = run(losses, weights=[2.0, 0.5, 1.0])
  want = reference_weights(losses) * [2.0, 0.5, 1.0]
  np.testing.assert_allclose(got, want, rtol=RTOL)


def test_an_empty_task_keeps_the_weights_finite():
  w = run([0.0, 0.5, 0.8])
  assert np.isfinite(w).all() and (w >= 0).all()
