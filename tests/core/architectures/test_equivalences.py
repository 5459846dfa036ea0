"""Architectures that must coincide, and MMoE/PLE against numpy oracles.

Params are random normals of the shapes `init` declares, copied between
models where the papers' definitions say two models are the same function.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mtl.core.architectures import CGC, PLE, MMoE, OMoE, SharedBottom

B, D = 8, 5
FAST_COMPILE = {'xla_backend_optimization_level': 0}


def random_params(module, x, seed=0):
  shapes = jax.eval_shape(
    functools.partial(module.init, train=False), jax.random.key(0), x
  )['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes
  )


def forward(module, params, x):
  """z [T, B, H] and the sown intermediates, evaluation mode."""
  fn = jax.jit(
    lambda p, x: module.apply(
      {'params': p}, x, train=False, mutable=['intermediates']
    ),
    compiler_options=FAST_COMPILE,
  )
  z, state = fn(params, x)
  return np.asarray(z), state.get('intermediates', {})


def inputs(seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(B, D)), 'float32')


def np_mlp(mlp_params, x, *index):
  """Oracle ReLU MLP on one slice of stacked params."""
  x = np.asarray(x, np.float64)
  for i in range(len(mlp_params)):
    layer = mlp_params[f'Dense_{i}']
    kernel = np.asarray(layer['kernel'])[index]
    bias = np.asarray(layer['bias'])[index]
    x = np.maximum(x @ kernel + bias, 0.0)
  return x


def np_softmax(a):
  e = np.exp(a - a.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def mix(weights, experts):
  """sum_e weights[:, e] * experts[e]: [B, E] x list of [B, H] -> [B, H]."""
  return sum(weights[:, e : e + 1] * h for e, h in enumerate(experts))


def test_mmoe_with_one_expert_is_shared_bottom():
  x = inputs()
  mmoe = MMoE(num_tasks=2, num_experts=1, expert_hidden=(6, 4))
  params = random_params(mmoe, x)
  bottom = {
    'mlp': jax.tree.map(lambda a: a[0], params['experts']['mlp']),
  }
  z_mmoe, _ = forward(mmoe, params, x)
  z_bottom, _ = forward(SharedBottom(num_tasks=2, hidden=(6, 4)), bottom, x)
  np.testing.assert_allclose(z_mmoe, z_bottom, rtol=1e-6, atol=1e-6)


def test_ple_with_one_level_is_cgc():
  x = inputs()
  kwargs = dict(
    num_tasks=3,
    num_specific_experts=2,
    num_shared_experts=2,
    expert_hidden=(4,),
  )
  ple = PLE(num_levels=1, **kwargs)
  cgc = CGC(**kwargs)
  params = random_params(ple, x)
  cgc_shapes = random_params(cgc, x)
  assert jax.tree.structure(params) == jax.tree.structure(cgc_shapes)
  np.testing.assert_array_equal(
    forward(ple, params, x)[0], forward(cgc, params, x)[0]
  )


def test_cgc_without_specific_experts_is_mmoe():
  x = inputs()
  cgc = CGC(
    num_tasks=2,
    num_specific_experts=0,
    num_shared_experts=3,
    expert_hidden=(4,),
  )
  params = random_params(cgc, x)
  level = params['level_0']
  mmoe_params = {
    'experts': level['shared_experts'],
    'task_gates': level['task_gates'],
  }
  mmoe = MMoE(num_tasks=2, num_experts=3, expert_hidden=(4,))
  np.testing.assert_allclose(
    forward(cgc, params, x)[0],
    forward(mmoe, mmoe_params, x)[0],
    rtol=1e-6,
    atol=1e-6,
  )


def test_omoe_gives_every_task_the_same_representation():
  x = inputs()
  omoe = OMoE(num_tasks=3, num_experts=3, expert_hidden=(4,))
  z, state = forward(omoe, random_params(omoe, x), x)
  np.testing.assert_array_equal(z[0], z[1])
  np.testing.assert_array_equal(z[0], z[2])
  (g,) = state['gates']
  np.testing.assert_array_equal(g[0], g[2])


def test_mmoe_matches_numpy():
  x = inputs()
  t, e = 3, 4
  mmoe = MMoE(num_tasks=t, num_experts=e, expert_hidden=(6, 5))
  params = random_params(mmoe, x)
  z, state = forward(mmoe, params, x)

  experts = [np_mlp(params['experts']['mlp'], x, i) for i in range(e)]
  kernels = np.asarray(params['task_gates']['gate']['kernel'])  # [T, D, E]
  gates = [np_softmax(np.asarray(x, np.float64) @ kernels[k]) for k in range(t)]
  want = np.stack([mix(gates[k], experts) for k in range(t)])
  np.testing.assert_allclose(z, want, rtol=1e-4, atol=1e-5)
  (sown,) = state['gates']
  np.testing.assert_allclose(sown, np.stack(gates), rtol=1e-4, atol=1e-6)


def np_ple(params, x, *, t, levels, m_k, m_s):
  """Oracle for PLE as Tang et al. (RecSys 2020) Sec. 4.3 describe it."""
  x = np.asarray(x, np.float64)
  task_in, shared_in = [x] * t, x
  for j in range(levels):
    lv = params[f'level_{j}']
    specific = [
      [np_mlp(lv['specific_experts']['bank']['mlp'], task_in[k], k, i)
       for i in range(m_k)]
      for k in range(t)
    ]  # fmt: skip
    shared = [
      np_mlp(lv['shared_experts']['mlp'], shared_in, i) for i in range(m_s)
    ]
    kernels = np.asarray(lv['task_gates']['gate']['kernel'])
    task_out = [
      mix(np_softmax(task_in[k] @ kernels[k]), specific[k] + shared)
      for k in range(t)
    ]
    if j < levels - 1:
      every = [h for k in range(t) for h in specific[k]] + shared
      gate = np_softmax(shared_in @ np.asarray(lv['shared_gate']['kernel']))
      shared_in = mix(gate, every)
    task_in = task_out
  return np.stack(task_in)


def test_ple_matches_numpy():
  x = inputs()
  t, levels, m_k, m_s = 2, 3, 2, 1
  ple = PLE(
    num_tasks=t,
    num_levels=levels,
    num_specific_experts=m_k,
    num_shared_experts=m_s,
    expert_hidden=(4, 3),
  )
  params = random_params(ple, x)
  z, state = forward(ple, params, x)
  want = np_ple(params, x, t=t, levels=levels, m_k=m_k, m_s=m_s)
  np.testing.assert_allclose(z, want, rtol=1e-4, atol=1e-5)

  assert 'shared_gate' not in params[f'level_{levels - 1}']
  for j in range(levels):
    (g,) = state[f'level_{j}']['gates']
    assert g.shape == (t, B, m_k + m_s)
    last = j == levels - 1
    assert ('shared_gate_weights' in state[f'level_{j}']) == (not last)
  (g,) = state['level_0']['shared_gate_weights']
  assert g.shape == (B, t * m_k + m_s)
