"""HoME (Wang et al., arXiv 2024) against float64 numpy written from the
paper's mechanisms: the expert normalisation and Swish, one feature-gated
expert, the whole two-level hierarchy with its self-gates, the keywords'
errors, and 8 devices against one."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.architectures import HoME
from mtl.core.architectures.home import expert_norm
from mtl.errors import ConfigError
from tests.core.architectures import data_parallel

FAST_COMPILE = {'xla_backend_optimization_level': 0}
B, D = 8, 5
HIDDEN = (7, 4)


def random_params(module, x, seed=0):
  shapes = jax.eval_shape(
    functools.partial(module.init, train=False), jax.random.key(0), x
  )['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes
  )


def f64(a):
  return np.asarray(a, np.float64)


def np_sigmoid(a):
  return 1.0 / (1.0 + np.exp(-a))


def np_softmax(a):
  e = np.exp(a - a.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_norm(h, scale, bias, eps=1e-5):
  """(h - mean) / sqrt(var + eps) over the units, then scale and bias."""
  mu = h.mean(-1, keepdims=True)
  var = ((h - mu) ** 2).mean(-1, keepdims=True)
  return scale * (h - mu) / np.sqrt(var + eps) + bias


def np_expert(p, e, x):
  """E(x) = Swish(Norm(MLP(x * 2 sigmoid(x A B)))) of expert e."""
  x = f64(x)
  x = (
    x
    * 2.0
    * np_sigmoid(x @ f64(p['feature_gate_a'][e]) @ f64(p['feature_gate_b'][e]))
  )
  for i in range(len(p['mlp'])):
    layer = p['mlp'][f'Dense_{i}']
    x = np.maximum(x @ f64(layer['kernel'][e]) + f64(layer['bias'][e]), 0.0)
  h = x @ f64(p['out']['kernel'][e]) + f64(p['out']['bias'][e])
  h = np_norm(h, f64(p['norm_scale'][e]), f64(p['norm_bias'][e]))
  return h * np_sigmoid(h)


def np_self(kernel, x, own):
  """sum_i softmax(x V)_i own_i, or sigmoid(x V) own with one expert."""
  logits = f64(x) @ f64(kernel)
  w = np_sigmoid(logits) if kernel.shape[-1] == 1 else np_softmax(logits)
  return np.einsum('bn,nbh->bh', w, own)


def np_home(p, x, groups, m_s, m_g, m_t):
  """The two levels of the module docstring, expert lists built by hand."""
  t = sum(len(g) for g in groups)
  e0 = [
    np_expert(p['level_0_experts'], e, x)
    for e in range(m_s + len(groups) * m_g)
  ]
  shared0 = e0[:m_s]
  group0 = [e0[m_s + c * m_g : m_s + (c + 1) * m_g] for c in range(len(groups))]
  meta = []
  for c in range(len(groups)):
    experts = np.stack(shared0 + group0[c])
    g = np_softmax(f64(x) @ f64(p['level_0_group_gates']['gate']['kernel'][c]))
    m = np.einsum('be,ebh->bh', g, experts)
    m += np_self(
      p['level_0_group_self_gates']['kernel'][c], x, np.stack(group0[c])
    )
    meta.append(m)
  g_s = np_softmax(f64(x) @ f64(p['level_0_shared_gate']['kernel']))
  meta_s = np.einsum('be,ebh->bh', g_s, np.stack(e0))
  meta_s += np_self(
    p['level_0_shared_self_gate']['kernel'][0], x, np.stack(shared0)
  )
  group_of = {k: c for c, g in enumerate(groups) for k in g}
  p1 = p['level_1_experts']
  shared1 = [np_expert(p1, e, meta_s) for e in range(m_s)]
  group1 = [
    [np_expert(p1, m_s + c * m_g + j, meta[c]) for j in range(m_g)]
    for c in range(len(groups))
  ]
  base = m_s + len(groups) * m_g
  out = []
  for k in range(t):
    c = group_of[k]
    task1 = [np_expert(p1, base + k * m_t + j, meta[c]) for j in range(m_t)]
    experts = np.stack(shared1 + group1[c] + task1)
    g = np_softmax(meta[c] @ f64(p['level_1_task_gates']['gate']['kernel'][k]))
    z = np.einsum('be,ebh->bh', g, experts)
    z += np_self(
      p['level_1_task_self_gates']['kernel'][k], meta[c], np.stack(task1)
    )
    out.append(z)
  return np.stack(out)


def test_expert_normalisation_against_numpy():
  rng = np.random.default_rng(0)
  h = (3.0 * rng.normal(size=(6, B, 5)) + 2.0).astype(np.float32)
  scale, bias = rng.normal(size=5), rng.normal(size=5)
  got = expert_norm(h, scale.astype(np.float32), bias.astype(np.float32))
  want = np_norm(f64(h), scale, bias)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Unit scale, zero bias: each example has mean 0, variance ~1.
  unit = np.asarray(expert_norm(h, np.ones(5), np.zeros(5)))
  np.testing.assert_allclose(unit.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(unit.var(-1), 1.0, rtol=1e-3)


@pytest.mark.parametrize(
  ('groups', 'm_s', 'm_g', 'm_t'),
  [(((0, 2), (1,)), 1, 2, 1), (((1,), (0,), (2,)), 2, 1, 2)],
)
def test_hierarchy_against_numpy(groups, m_s, m_g, m_t):
  x = np.random.default_rng(1).normal(size=(B, D)).astype(np.float32)
  model = HoME(
    num_tasks=3,
    task_groups=groups,
    num_shared_experts=m_s,
    num_group_experts=m_g,
    num_task_experts=m_t,
    expert_hidden=HIDDEN,
    feature_gate_rank=2,
  )
  params = random_params(model, x, seed=m_s)
  run = jax.jit(
    lambda p, x: model.apply(
      {'params': p}, x, train=False, mutable=['intermediates']
    ),
    compiler_options=FAST_COMPILE,
  )
  got, state = run(params, x)
  want = np_home(params, x, groups, m_s, m_g, m_t)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  gates = state['intermediates']['gates'][0]
  assert gates.shape == (3, B, m_s + m_g + m_t)
  np.testing.assert_allclose(np.sum(gates, -1), 1.0, rtol=1e-5)


def test_feature_gate_starts_at_one():
  """B starts at zero: at init every gate 2 sigmoid(x A B) is 1, so each
  expert reads its input unchanged."""
  x = np.zeros((B, D), np.float32)
  model = HoME(num_tasks=2, expert_hidden=(3,), feature_gate_rank=3)
  init = jax.jit(
    functools.partial(model.init, train=False), compiler_options=FAST_COMPILE
  )
  params = init(jax.random.key(0), x)['params']
  for level in ('level_0_experts', 'level_1_experts'):
    assert params[level]['feature_gate_b'].shape[1] == 3
    assert not np.any(params[level]['feature_gate_b'])
    assert np.all(np.abs(params[level]['feature_gate_a']) > 0)


@pytest.mark.parametrize(
  ('kwargs', 'message'),
  [
    (
      dict(task_groups=((0,), (0, 1))),
      'model.task_groups is ((0,), (0, 1)), expected each task index 0..1',
    ),
    (dict(task_groups=((0, 1), ())), 'model.task_groups is ((0, 1), ())'),
    (dict(num_task_experts=-1), 'model.num_task_experts is -1, expected'),
    (dict(feature_gate_rank=1.5), 'model.feature_gate_rank is 1.5, expected'),
    (
      dict(num_shared_experts=0, num_group_experts=0),
      'model.num_shared_experts + num_group_experts is 0, expected >= 1',
    ),
  ],
)
def test_out_of_range_keywords_are_one_config_error_line(kwargs, message):
  with pytest.raises(ConfigError) as err:
    HoME(num_tasks=2, **kwargs)
  assert str(err.value).startswith(message) and '\n' not in str(err.value)


def test_8_devices_equal_one():
  """Norm is per example, so shards reproduce the batch. Compile time
  dominates: the smallest hierarchy with every kind of expert, without
  feature-gates (per example too; test_hierarchy_against_numpy)."""
  data_parallel.assert_devices_equal_one(
    'home',
    dict(
      task_groups=((0, 2), (1,)),
      num_shared_experts=1,
      num_group_experts=1,
      num_task_experts=1,
      expert_hidden=(3,),
      feature_gate_rank=0,
    ),
  )
