"""GLS and GradVac against reference outputs of LibMTL 1.1.5.

The fixtures were written by experiments/references/make_loss_weighting_
fixtures.py (PyTorch, float64; its docstring has the command). GLS: mtl's
weights are the gradient LibMTL's backward applies; the weights LibMTL
returns for logging are not (see mtl/core/weighting/gls.py). GradVac, two
tasks whose cosine falls from step to step: LibMTL moves a target only when
it vaccinates, Algorithm 1 (mtl) at every visited pair, which is the same
while every pair is vaccinated at every step (checked on the fixture).
"""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.weighting.gls import gls
from mtl.core.weighting.gradvac import gradvac

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
RTOL = 1e-5


@functools.cache
def fixture(name):
  return json.loads((FIXTURES / f'{name}.json').read_text())


@functools.cache
def _gls():
  return jax.jit(gls().update)


@pytest.mark.parametrize('case', range(10))
def test_gls_weights_are_libmtl_gradient(case):
  c = fixture('gls')['cases'][case]
  losses = np.asarray(c['losses'])
  t = len(losses)
  w, _ = _gls()(jnp.ones(t), (), losses=jnp.asarray(losses, jnp.float32))
  np.testing.assert_allclose(w, c['gradient'], rtol=RTOL)
  # LibMTL's logged weights are L_t / (T prod L), not that gradient.
  logged = losses / (t * np.prod(losses))
  np.testing.assert_allclose(c['logged_weights'], logged, rtol=1e-12)
  if not np.allclose(losses, losses[0]):
    assert not np.allclose(c['logged_weights'], c['gradient'], rtol=1e-3)


@functools.cache
def _gradvac(beta):
  method = gradvac(beta=beta)
  return method, jax.jit(method.update)


@pytest.mark.parametrize('case', range(10))
def test_gradvac_two_tasks_matches_libmtl(case):
  c = fixture('gradvac')['cases'][case]
  method, update = _gradvac(c['beta'])
  state = method.init(2)
  for step, row in enumerate(c['steps']):
    g = np.asarray(row['gradients'])
    coefficients, state = update(
      jnp.ones(2),
      state,
      task_grad_gram=jnp.asarray(g @ g.T, jnp.float32),
      losses=jnp.ones(2),
      step=step,
    )
    d = np.asarray(coefficients, np.float64) @ g
    want = np.asarray(row['combined'])
    assert np.linalg.norm(d - want) <= RTOL * np.linalg.norm(want), step
    np.testing.assert_allclose(coefficients, row['coefficients'], rtol=RTOL)
    # Both pairs vaccinated (LibMTL's coefficients grew), so the rules agree.
    assert (np.asarray(row['coefficients']) > 1.0 + 1e-9).all(), step
    np.testing.assert_allclose(state.targets, row['targets'], atol=RTOL)
