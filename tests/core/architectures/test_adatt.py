"""AdaTT (Li et al., KDD 2023) against float64 numpy written from the
paper's fusion unit: one unit (gated fusion of all experts plus the linear
residual of the task's native experts, with and without shared experts),
two stacked levels, the keywords' errors, and 8 devices against one."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.architectures import AdaTT
from mtl.core.architectures.adatt import FusionLevel
from mtl.errors import ConfigError
from tests.core.architectures import data_parallel

FAST_COMPILE = {'xla_backend_optimization_level': 0}
B, D, H, T = 8, 5, 4, 2


def random_params(module, *inputs, seed=0):
  shapes = jax.eval_shape(
    functools.partial(module.init, train=False), jax.random.key(0), *inputs
  )['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes
  )


def np_expert(mlp, x, *index):
  x = np.asarray(x, np.float64)
  for i in range(len(mlp)):
    kernel = np.asarray(mlp[f'Dense_{i}']['kernel'], np.float64)[index]
    bias = np.asarray(mlp[f'Dense_{i}']['bias'], np.float64)[index]
    x = np.maximum(x @ kernel + bias, 0.0)
  return x


def np_softmax(a):
  e = np.exp(a - a.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_fusion(p, task_x, shared_x, m, m_s, final):
  """f_t = sum_e softmax(W_t f_t^{l-1})_e AllExp_e + sum_i v_ti E_ti (and
  the shared unit's f_s below the last level): ([T, B, H], [B, H])."""
  task_x = np.asarray(task_x, np.float64)
  native = np.array(
    [
      [
        np_expert(p['specific_experts']['bank']['mlp'], task_x[t], t, i)
        for i in range(m)
      ]
      for t in range(T)
    ]
  )  # [T, m, B, H]
  shared = np.zeros((0, B, H))
  if m_s:
    shared = np.array(
      [np_expert(p['shared_experts']['mlp'], shared_x, j) for j in range(m_s)]
    )
  every = np.concatenate([native.reshape(T * m, B, -1), shared])
  out = []
  for t in range(T):
    g = np_softmax(task_x[t] @ np.asarray(p['task_gates']['gate']['kernel'][t]))
    fused = np.einsum('be,ebh->bh', g, every)
    v = np.asarray(p['native_weights'][t]) if m > 1 else np.ones(1)
    out.append(fused + np.einsum('i,ibh->bh', v, native[t]))
  if final or not m_s:
    return np.stack(out), None
  g_s = np_softmax(
    np.asarray(shared_x, np.float64) @ p['shared_gate']['kernel']
  )
  v_s = np.asarray(p['shared_native_weights']) if m_s > 1 else np.ones(1)
  f_s = np.einsum('be,ebh->bh', g_s, every) + np.einsum(
    'j,jbh->bh', v_s, shared
  )
  return np.stack(out), f_s


def _apply(module, params, *inputs):
  fn = jax.jit(
    lambda p, *a: module.apply({'params': p}, *a, train=False),
    compiler_options=FAST_COMPILE,
  )
  return fn(params, *inputs)


@pytest.mark.parametrize(
  ('m', 'm_s', 'final'),
  [(2, 2, False), (3, 1, True), (1, 0, True)],  # Last: AdaTT-sp, m = 1.
)
def test_one_fusion_unit_against_numpy(m, m_s, final):
  rng = np.random.default_rng(m)
  task_x = rng.normal(size=(T, B, D)).astype(np.float32)
  shared_x = rng.normal(size=(B, D)).astype(np.float32)
  unit = FusionLevel(T, m, m_s, (H,), final=final)
  params = random_params(unit, task_x, shared_x, seed=m)
  task_out, shared_out = _apply(unit, params, task_x, shared_x)
  want, want_shared = np_fusion(params, task_x, shared_x, m, m_s, final)
  np.testing.assert_allclose(task_out, want, rtol=1e-5, atol=1e-5)
  if want_shared is None:
    assert shared_out is None
  else:
    np.testing.assert_allclose(shared_out, want_shared, rtol=1e-5, atol=1e-5)
  # The residual is there: without it the unit is MMoE-like gating only.
  assert ('native_weights' in params) == (m > 1)


def test_two_levels_chain_the_units():
  """Level 2's experts of task t read task t's level-1 output; the shared
  experts read the shared unit's output."""
  m, m_s = 2, 1
  x = np.random.default_rng(7).normal(size=(B, D)).astype(np.float32)
  model = AdaTT(
    num_tasks=T,
    num_levels=2,
    num_specific_experts=m,
    num_shared_experts=m_s,
    expert_hidden=(H,),
  )
  params = random_params(model, x, seed=3)
  got = np.asarray(_apply(model, params, x))
  task_x = np.broadcast_to(x, (T, B, D))
  f1, f1_s = np_fusion(params['level_0'], task_x, x, m, m_s, final=False)
  want, _ = np_fusion(params['level_1'], f1, f1_s, m, m_s, final=True)
  assert 'shared_gate' not in params['level_1']  # The last has no unit.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
  ('kwargs', 'message'),
  [
    (dict(num_levels=0), 'model.num_levels is 0, expected an int >= 1'),
    (
      dict(num_specific_experts=0, num_shared_experts=2),
      'model.num_specific_experts is 0, expected an int >= 1',
    ),
    (dict(num_shared_experts=-1), 'model.num_shared_experts is -1, expected'),
  ],
)
def test_out_of_range_keywords_are_one_config_error_line(kwargs, message):
  with pytest.raises(ConfigError) as err:
    AdaTT(num_tasks=T, **kwargs)
  assert str(err.value).startswith(message) and '\n' not in str(err.value)


def test_8_devices_equal_one():
  data_parallel.assert_devices_equal_one(
    'adatt',
    dict(
      num_levels=2,
      num_specific_experts=2,
      num_shared_experts=1,
      expert_hidden=(4,),
    ),
  )
