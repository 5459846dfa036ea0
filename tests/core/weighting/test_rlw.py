"""RLW (Lin et al. 2022): reproducible random weights with mean one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.weighting.rlw import DISTRIBUTIONS, rlw


@pytest.mark.parametrize('distribution', DISTRIBUTIONS)
def test_positive_sum_to_t_mean_one_and_reproducible(distribution):
  method = rlw(distribution, seed=3)
  update = jax.jit(method.update)
  state = method.init(3)

  def weights(k):
    return np.asarray(update(jnp.ones(3), state, losses=jnp.ones(3), step=k)[0])

  draws = np.stack([weights(k) for k in range(2000)])
  assert (draws > 0).all()
  np.testing.assert_allclose(draws.sum(1), 3.0, rtol=1e-5)
  np.testing.assert_allclose(draws.mean(0), 1.0, atol=0.05)
  np.testing.assert_array_equal(weights(17), draws[17])  # (seed, step).
  assert not np.allclose(draws[0], draws[1])
  other = rlw(distribution, seed=4).update(
    jnp.ones(3), state, losses=jnp.ones(3), step=17
  )[0]
  assert not np.allclose(other, draws[17])


def test_unknown_distribution_is_a_one_line_error():
  with pytest.raises(ValueError, match="distribution is 'gauss', expected"):
    rlw('gauss')
