"""GradDrop (Chen et al. 2020) against a float64 reference.

The reference is the paper's Algorithm 1 on explicit gradients g [T, P] in
float64 numpy: the sign purity P of Eq. 1, the masks from one uniform per
element, the leak, and sum_t M_t * g_t. The uniforms are drawn here by the
same jax.random call as the method's (uniform of fold_in(key(seed), step)),
so the reference draws the same signs. mtl's combined gradient must be
within 1e-5 relative of the reference's on every set, at 5 steps each; no
purity is within `MARGIN` of its uniform, so float32 rounding cannot flip a
sign.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from mtl.core.weighting import WEIGHTINGS
from mtl.core.weighting.graddrop import graddrop
from mtl.errors import ConfigError
from mtl.shell import validate
from tests.core.weighting import hard_cases

RTOL = 1e-5
MARGIN = 1e-5
P = 64


def with_zeros(rng, t=4, p=P):
  """Entries zero in some tasks, and some elements zero in every task."""
  g = rng.normal(size=(t, p))
  g[rng.random((t, p)) < 0.4] = 0.0
  g[:, :5] = 0.0
  return g


SETS = {
  'opposed2': lambda r: hard_cases.opposed(r, 2, P),
  'opposed3': lambda r: hard_cases.opposed(r, 3, P),
  'opposed5': lambda r: hard_cases.opposed(r, 5, P, cos=-0.99),
  'scaled3': lambda r: hard_cases.scaled(r, 3, P),
  'scaled5': lambda r: hard_cases.scaled(r, 5, P),
  'opposed_scaled6': lambda r: hard_cases.opposed_scaled(r, 6, P),
  'parallel5': lambda r: hard_cases.nearly_parallel(r, 5, P),
  'parallel6_close': lambda r: hard_cases.nearly_parallel(r, 6, P, 1e-3),
  'random10': lambda r: r.normal(size=(10, P)),
  'zero_task': lambda r: hard_cases.with_zero(r, 3, P),
  'zero_entries': with_zeros,
}


def uniforms(seed, step, size):
  key = jax.random.fold_in(jax.random.key(seed), step)
  return np.asarray(jax.random.uniform(key, (size,), jnp.float32), np.float64)


def reference(g, u, leak):
  """(sum_t M_t * g_t, the smallest |P - U|) in float64."""
  total, mass = g.sum(0), np.abs(g).sum(0)
  purity = 0.5 * (
    1 + np.divide(total, mass, out=np.zeros_like(total), where=mass > 0)
  )
  keep = ((purity > u) & (g > 0)) | ((purity < u) & (g < 0))
  mask = leak + (1 - leak) * keep
  return (mask * g).sum(0), np.min(np.abs(purity - u))


_UPDATES = {}


def run(g, *, leak=0.0, seed=0, step=0, weights=None):
  if (leak, seed) not in _UPDATES:
    _UPDATES[leak, seed] = jax.jit(graddrop(leak=leak, seed=seed).update)
  t = len(g)
  out, _ = _UPDATES[leak, seed](
    jnp.ones(t) if weights is None else jnp.asarray(weights, jnp.float32),
    (),
    task_grads=jnp.asarray(g, jnp.float32),
    losses=jnp.ones(t),
    step=step,
  )
  return np.asarray(out.weights), np.asarray(out.gradient, np.float64)


@pytest.mark.parametrize('name', sorted(SETS))
@pytest.mark.parametrize('leak', [0.0, 0.3])
def test_matches_the_reference(name, leak):
  g = SETS[name](np.random.default_rng(5))
  for step in range(5):
    want, margin = reference(g, uniforms(0, step, P), leak)
    assert margin > MARGIN, margin
    w, got = run(g, leak=leak, step=step)
    assert np.linalg.norm(got - want) <= RTOL * np.linalg.norm(want)
    np.testing.assert_array_equal(w, np.ones(len(g)))


def test_the_signs_are_dropped():
  # Opposed gradients: the reference keeps one sign per element, so the
  # result differs from the plain sum, and from step to step.
  g = SETS['opposed3'](np.random.default_rng(0))
  _, first = run(g, step=0)
  _, second = run(g, step=1)
  assert np.linalg.norm(first - g.sum(0)) > 0.1 * np.linalg.norm(g.sum(0))
  assert not np.allclose(first, second)


def test_by_hand():
  # g_1 = (1, -1, 2, 0, 3), g_2 = (1, 1, -2, 0, 1): P = (1, 1/2, 1/2, 1/2, 1).
  # Element 0 and 4: P = 1 > U, the positive ones kept: 2 and 4. Elements
  # 1 and 2: positive where U < 1/2, else negative. Element 3: 0.
  g = np.array([[1.0, -1.0, 2.0, 0.0, 3.0], [1.0, 1.0, -2.0, 0.0, 1.0]])
  u = uniforms(3, 7, 5)
  positive = u[1:3] < 0.5
  want = [2.0, 1.0 if positive[0] else -1.0, 2.0 if positive[1] else -2.0]
  _, got = run(g, seed=3, step=7)
  np.testing.assert_allclose(got, want + [0.0, 4.0], rtol=1e-6)


def test_leak_one_is_the_weighted_sum():
  g = SETS['opposed5'](np.random.default_rng(2))
  w = np.array([2.0, 0.5, 1.0, 1.0, 3.0])
  weights, got = run(g, leak=1.0, weights=w)
  np.testing.assert_allclose(got, w @ g, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(weights, w)


def test_incoming_weights_act_on_the_gradients():
  g = SETS['scaled3'](np.random.default_rng(4))
  w = np.array([2.0, 0.5, 1.0])
  for step in range(3):
    want, margin = reference(w[:, None] * g, uniforms(0, step, P), 0.0)
    assert margin > MARGIN
    _, got = run(g, weights=w, step=step)
    assert np.linalg.norm(got - want) <= RTOL * np.linalg.norm(want)


def test_registered_as_a_vector_method():
  method = WEIGHTINGS['graddrop']()
  assert method.needs == frozenset({'task_grads'})
  assert method.combines_gradients == 'vector'


@pytest.mark.parametrize(
  'kwargs, message',
  [
    ({'leak': -0.1}, r'graddrop: leak is -0.1, expected in \[0, 1\]'),
    ({'leak': 1.5}, r'graddrop: leak is 1.5, expected in \[0, 1\]'),
    ({'seed': 'a'}, "graddrop: seed is 'a', expected an int"),
  ],
)
def test_out_of_range_is_one_line_error(kwargs, message):
  with pytest.raises(ConfigError, match=message) as err:
    graddrop(**kwargs)
  assert '\n' not in str(err.value)


def test_config_key_is_named():
  config = common.base_config('mmoe', 'entire_space')
  config.weighting_name = 'graddrop'
  validate.check_config(config)  # The defaults pass.
  config.weighting.graddrop.leak = 2.0
  with pytest.raises(
    ConfigError, match=r'^weighting.graddrop.leak is 2.0, expected'
  ):
    validate.check_config(config)
