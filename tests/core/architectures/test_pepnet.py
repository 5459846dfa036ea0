"""PEPNet (Chang et al., KDD 2023) against float64 numpy written from the
paper's Gate NU, EPNet and PPNet: the forward pass and its gates, the two
stop-gradients (checked against hand-derived gradients with jax.grad), the
default prior features, the keywords' errors, and 8 devices against one."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.architectures import PEPNet
from mtl.errors import ConfigError
from tests.core.architectures import data_parallel

FAST_COMPILE = {'xla_backend_optimization_level': 0}
B, T = 8, 2
# Two dense columns, then two categorical features of width 2: x [B, 6].
LAYOUT = (('d0', 0, 1), ('d1', 1, 2), ('s0', 2, 4), ('s1', 4, 6))
DOMAIN, PRIOR = [1], [2, 3, 4, 5]  # 'd1'; the default prior: s0 and s1.
HIDDEN = (4, 3)


def model_of(**kwargs):
  kwargs = {
    'domain_features': ('d1',),
    'hidden': HIDDEN,
    'gate_width': 5,
    **kwargs,
  }
  return PEPNet(num_tasks=T, **kwargs)


@functools.cache
def setup():
  x = np.random.default_rng(0).normal(size=(B, 6)).astype(np.float32)
  model = model_of()
  shapes = jax.eval_shape(
    functools.partial(model.init, train=False, layout=LAYOUT),
    jax.random.key(0),
    x,
  )['params']
  rng = np.random.default_rng(1)
  params = jax.tree.map(
    lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes
  )
  return model, params, x


def f64(a):
  return np.asarray(a, np.float64)


def np_sigmoid(a):
  return 1.0 / (1.0 + np.exp(-a))


def np_gate(p, u):
  """Gate NU: 2 sigmoid(relu(u W1 + b1) W2 + b2), and what backprop needs."""
  a1 = f64(u) @ f64(p['Dense_0']['kernel']) + f64(p['Dense_0']['bias'])
  s = np_sigmoid(
    np.maximum(a1, 0.0) @ f64(p['Dense_1']['kernel'])
    + f64(p['Dense_1']['bias'])
  )
  return 2.0 * s, (a1, s)


def np_gate_vjp(p, cache, cotangent):
  """d/du of sum(cotangent * U(u)), the Gate NU's chain rule by hand."""
  a1, s = cache
  d_a2 = cotangent * 2.0 * s * (1.0 - s)
  d_a1 = (d_a2 @ f64(p['Dense_1']['kernel']).T) * (a1 > 0)
  return d_a1 @ f64(p['Dense_0']['kernel']).T


def np_pepnet(p, x):
  """EPNet then PPNet (module docstring): (z [T, B, H], delta, gates)."""
  x = f64(x)
  delta, _ = np_gate(p['epnet_gate'], np.concatenate([x[:, DOMAIN], x], 1))
  o_ep = delta * x
  h = np.stack([o_ep] * T)
  gates = []
  for i in range(len(HIDDEN)):
    u = np.concatenate([x[:, PRIOR], o_ep], 1)
    g, _ = np_gate(p[f'ppnet_gate_{i}'], u)
    g = g.reshape(B, T, -1).transpose(1, 0, 2)
    gates.append(g)
    layer = p[f'task_layer_{i}']
    h = np.maximum(
      np.einsum('tbd,tdh->tbh', g * h, f64(layer['kernel']))
      + f64(layer['bias'])[:, None],
      0.0,
    )
  return h, delta, gates


def _jit(fn):
  return jax.jit(fn, compiler_options=FAST_COMPILE)


def test_forward_and_gates_against_numpy():
  model, params, x = setup()
  run = _jit(
    lambda p, x: model.apply(
      {'params': p},
      x,
      train=False,
      layout=LAYOUT,
      mutable=['intermediates'],
    )
  )
  z, state = run(params, x)
  want, delta, gates = np_pepnet(params, x)
  np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-5)
  sown = state['intermediates']
  np.testing.assert_allclose(sown['epnet_weights'][0], delta, rtol=1e-5)
  for i, g in enumerate(gates):
    np.testing.assert_allclose(sown[f'ppnet_weights_{i}'][0], g, rtol=1e-5)
  assert 0 < delta.min() and delta.max() < 2  # gamma = 2


def test_epnet_stops_the_general_embeddings_gradient():
  """d sum(c * O_ep) / dx = c * delta (the product's own path) plus, on the
  domain column only, the gate's path through E_d. The gate's path through
  E (non-zero here) is stopped."""
  model, params, x = setup()
  c = np.random.default_rng(2).normal(size=x.shape)

  def loss(x):
    o_ep, _ = model.apply({'params': params}, x, LAYOUT, method='epnet')
    return jnp.sum(jnp.asarray(c, jnp.float32) * o_ep)

  got = np.asarray(_jit(jax.grad(loss))(x))
  u = np.concatenate([f64(x)[:, DOMAIN], f64(x)], 1)
  delta, cache = np_gate(params['epnet_gate'], u)
  through_gate = np_gate_vjp(params['epnet_gate'], cache, c * f64(x))
  want = c * delta
  want[:, DOMAIN] += through_gate[:, : len(DOMAIN)]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # What the stop-gradient removes is not negligible: the test can fail.
  assert np.abs(through_gate[:, len(DOMAIN) :]).max() > 1e-2


def test_ppnet_gates_stop_the_gradient_of_o_ep():
  """Each layer's gates: no gradient into O_ep; into x only through the
  prior columns, equal to the Gate NU's chain rule."""
  model, params, x = setup()
  o_ep = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
  for i, d in enumerate((6, HIDDEN[0])):
    c = np.random.default_rng(4 + i).normal(size=(T, B, d))

    def loss(x, o_ep, i=i, c=c):
      g = model.apply(
        {'params': params}, i, x, o_ep, LAYOUT, method='ppnet_gate'
      )
      return jnp.sum(jnp.asarray(c, jnp.float32) * g)

    d_x, d_o = _jit(jax.grad(loss, argnums=(0, 1)))(x, o_ep)
    np.testing.assert_array_equal(d_o, 0.0)
    p = params[f'ppnet_gate_{i}']
    u = np.concatenate([f64(x)[:, PRIOR], f64(o_ep)], 1)
    _, cache = np_gate(p, u)
    through = np_gate_vjp(p, cache, c.transpose(1, 0, 2).reshape(B, T * d))
    want = np.zeros(x.shape)
    want[:, PRIOR] = through[:, : len(PRIOR)]
    np.testing.assert_allclose(d_x, want, rtol=1e-4, atol=1e-5)
    assert np.abs(through[:, len(PRIOR) :]).max() > 1e-2


def test_prior_features_by_name():
  model = model_of(prior_features=('s1', 'd0'))
  got = model.bind({}).prior_columns(LAYOUT)
  np.testing.assert_array_equal(got, [0, 4, 5])  # In x's column order.
  assert model.bind({}).prior_columns(None) is None  # All of x.
  narrow = (('d0', 0, 1), ('s0', 1, 2))  # embedding.dim 1: none wider.
  assert model_of().bind({}).prior_columns(narrow) is None


@pytest.mark.parametrize(
  ('kwargs', 'message'),
  [
    (dict(gate_scale=0.0), 'model.gate_scale is 0.0, expected a finite'),
    (dict(gate_width=0), 'model.gate_width is 0, expected an int >= 1'),
    (
      dict(prior_features=('user',)),
      "model.prior_features names 'user', which is not a feature; expected "
      'some of d0, d1, s0, s1',
    ),
  ],
)
def test_bad_keywords_are_one_config_error_line(kwargs, message):
  model = model_of(**kwargs)
  x = np.zeros((B, 6), np.float32)
  with pytest.raises(ConfigError) as err:
    jax.eval_shape(
      functools.partial(model.init, train=False, layout=LAYOUT),
      jax.random.key(0),
      x,
    )
  assert str(err.value).startswith(message) and '\n' not in str(err.value)


def test_8_devices_equal_one():
  data_parallel.assert_devices_equal_one(
    'pepnet', dict(hidden=(4, 3), gate_width=4)
  )
