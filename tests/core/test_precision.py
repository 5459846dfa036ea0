"""config.precision: 'float32' is the plain program bit for bit; 'bfloat16'
computes the backbone's and towers' Dense layers in bfloat16 while params,
logits, losses, gradients and the optimizer and balancing state stay
float32 (mtl/core/precision.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import smoke
from mtl.core import train_state, train_step
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS
from mtl.errors import ConfigError
from mtl.shell import validate

B, F, T = 16, 3, 2
VOCAB_SIZES = (4, 5)
FAST_COMPILE = {'xla_backend_optimization_level': 0}
KWARGS = {
  'mmoe': {'num_experts': 3, 'expert_hidden': (6,)},
  'shared_bottom': {'hidden': (6,)},
}
# bfloat16 keeps 8 significant bits: a rounding to nearest moves a value by
# at most 2^-9 of it. U = 2^-8 leaves room for second-order terms and the
# float32 accumulation inside each dot.
U = 2.0**-8


def features(seed=0):
  rng = np.random.default_rng(seed)
  sparse = np.stack([rng.integers(0, v, B) for v in VOCAB_SIZES], 1)
  return {
    'dense': rng.normal(size=(B, F)).astype(np.float32),
    'sparse': sparse.astype(np.int32),
  }


def labels(seed=0):
  return (
    np.random.default_rng(seed + 1).integers(0, 2, (T, B)).astype(np.float32)
  )


def model_of(name, **precision):
  return make_model(
    name,
    KWARGS[name],
    num_tasks=T,
    vocab_sizes=VOCAB_SIZES,
    embed_dim=2,
    tower_hidden=(3,),
    **precision,
  )


def loss_and_grads(model, variables, x, y):
  def loss(params):
    logits = model.apply({**variables, 'params': params}, x, train=False)
    return optax.sigmoid_binary_cross_entropy(logits, y).mean(), logits

  grad_fn = jax.value_and_grad(loss, has_aux=True)
  return jax.jit(grad_fn, compiler_options=FAST_COMPILE)(variables['params'])


def init(model, x, seed=0):
  fn = lambda key: model.init(key, x, train=False)  # noqa: E731
  return jax.jit(fn, compiler_options=FAST_COMPILE)(jax.random.key(seed))


def float_leaves(tree):
  return [
    a for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.floating)
  ]


def test_float32_default_is_the_plain_program_bit_for_bit():
  x, y = features(), labels()
  default, f32 = model_of('mmoe'), model_of('mmoe', precision='float32')
  bf16 = model_of('mmoe', precision='bfloat16')
  v = init(default, x)
  for other in (f32, bf16):  # Same params, same bits, float32.
    w = init(other, x)
    assert jax.tree.structure(w) == jax.tree.structure(v)
    for a, b in zip(jax.tree.leaves(w), jax.tree.leaves(v), strict=True):
      assert a.dtype == b.dtype == jnp.float32
      np.testing.assert_array_equal(a, b)
  (loss0, logits0), grads0 = loss_and_grads(default, v, x, y)
  (loss1, logits1), grads1 = loss_and_grads(f32, v, x, y)
  np.testing.assert_array_equal(logits1, logits0)
  np.testing.assert_array_equal(loss1, loss0)
  for a, b in zip(
    jax.tree.leaves(grads1), jax.tree.leaves(grads0), strict=True
  ):
    np.testing.assert_array_equal(a, b)
  jaxpr = str(jax.make_jaxpr(lambda v: f32.apply(v, x, train=False))(v))
  assert 'bf16' not in jaxpr


def test_bfloat16_dense_layers_run_in_bfloat16_params_and_logits_float32():
  x, y = features(), labels()
  model = model_of('mmoe', precision='bfloat16')
  v = init(model, x)
  logits, state = model.apply(
    v, x, train=False, capture_intermediates=True, mutable=['intermediates']
  )
  assert logits.dtype == jnp.float32
  inter = state['intermediates']
  # The outputs of the expert bank's Dense layers, of the gates, of the
  # backbone and of the towers' heads (before the cast of the logits).
  for out in (
    inter['backbone']['experts']['__call__'][0],
    inter['backbone']['task_gates']['__call__'][0],
    inter['backbone']['__call__'][0],
    inter['towers']['__call__'][0],
  ):
    assert out.dtype == jnp.bfloat16
  assert inter['embed']['__call__'][0].dtype == jnp.float32
  assert inter['__call__'][0].dtype == jnp.float32
  # Every matmul of the forward pass (experts, gates, towers) reads
  # bfloat16 operands: the embedding is a gather, not a dot.
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(v)
  dots = [
    e
    for e in _equations(jaxpr.jaxpr)
    if e.primitive.name in ('dot_general', 'einsum')
  ]
  assert dots
  assert all(a.aval.dtype == jnp.bfloat16 for e in dots for a in e.invars), [
    str(e) for e in dots
  ]
  (loss, _), grads = loss_and_grads(model, v, x, y)
  assert loss.dtype == jnp.float32
  assert {a.dtype for a in jax.tree.leaves(grads)} == {jnp.dtype('float32')}
  assert {a.dtype for a in jax.tree.leaves(v)} == {jnp.dtype('float32')}


def _equations(jaxpr):
  """Every equation of a jaxpr, those of its sub-jaxprs (jit, custom_jvp)
  included."""
  for e in jaxpr.eqns:
    yield e
    for p in e.params.values():
      for sub in p if isinstance(p, (tuple, list)) else (p,):
        inner = getattr(sub, 'jaxpr', None)
        if inner is not None:
          yield from _equations(getattr(inner, 'jaxpr', inner))


def _forward64(params, x, scale=False):
  """Shared-Bottom's backbone and towers in float64 numpy from the params:
  h = relu(x W + b), per tower t: relu(h W_t + b_t) W_head_t + b_head_t.
  With `scale`, the same network on |x|, |W|, |b| without relu: the sums
  of absolute terms that bound each rounding error (returned per layer)."""
  f = lambda a: (
    np.abs(np.asarray(a, np.float64))
    if scale
    else np.asarray(  # noqa: E731
      a, np.float64
    )
  )
  act = (lambda a: a) if scale else (lambda a: np.maximum(a, 0.0))
  bottom = params['backbone']['mlp']['Dense_0']
  tower = params['towers']['tower']
  h = act(f(x) @ f(bottom['kernel']) + f(bottom['bias']))
  out, layers = [], [h]
  for t in range(T):
    d, head = tower['mlp']['Dense_0'], tower['head']
    g = act(h @ f(d['kernel'][t]) + f(d['bias'][t]))
    out.append((g @ f(head['kernel'][t]) + f(head['bias'][t]))[:, 0])
    layers.append(g)
  return np.stack(out), layers


def test_bfloat16_logits_within_the_derived_rounding_bound():
  """Oracle: the float64 forward pass from the same params and inputs.

  A Dense layer y = x W + b in bfloat16 rounds x, W, b, the dot and the sum
  once each (at most u = 2^-9 relative each; we take U = 2^-8), so to first
  order |dy| <= |W|^T |dx| + 3 U (|x| |W| + |b|) + U |y|. Chained through
  Shared-Bottom's three layers (relu is 1-Lipschitz) the logit's error is
  at most 7 U S, S the same network run on |x|, |W|, |b| without relu. The
  float32 model stays within 1e-5 of float64."""
  x = features()
  f32, bf16 = (
    model_of('shared_bottom'),
    model_of('shared_bottom', precision='bfloat16'),
  )
  v = init(f32, x, seed=1)
  _, inter = f32.apply(
    v, x, train=False, capture_intermediates=True, mutable=['intermediates']
  )
  emb = np.asarray(inter['intermediates']['embed']['__call__'][0])
  ref, _ = _forward64(v['params'], emb)
  scale, _ = _forward64(v['params'], emb, scale=True)
  lo32 = np.asarray(f32.apply(v, x, train=False), np.float64)
  lo16 = np.asarray(bf16.apply(v, x, train=False), np.float64)
  np.testing.assert_allclose(lo32, ref, rtol=1e-5, atol=1e-6)
  err = np.abs(lo16 - ref)
  bound = 7 * U * scale
  assert np.all(err <= bound), (err / bound).max()
  # Not float32 in disguise: bfloat16 moves the logits by more than
  # float32's rounding does.
  assert err.max() > 1e3 * np.abs(lo32 - ref).max()


def test_bfloat16_train_step_keeps_params_and_state_float32():
  """One jitted step of bf16 MMoE with MGDA (per-task gradients and their
  Gram matrix, combined in float32): params, Adam's moments, the method's
  state and the metrics stay float32 and finite, every param moves; the
  step's losses are the bf16 forward's BCE and within bf16 rounding of the
  float32 forward's on the same params."""
  x, y = features(2), labels(2)
  batch = {**x, 'labels': y, 'mask': np.ones((T, B), np.float32)}
  tasks = (Task('a'), Task('b'))
  tx, method = optax.adam(1e-2), WEIGHTINGS['mgda']()
  model = model_of('mmoe', precision='bfloat16')
  state = train_state.init_train_state(
    model,
    tx,
    method,
    train_step.features_of(batch),
    num_tasks=T,
    key=jax.random.key(0),
  )
  step = jax.jit(
    train_step.make_train_step(model, tx, method, tasks, steps_per_epoch=1),
    compiler_options=FAST_COMPILE,
  )
  new, metrics = step(state, batch)
  for tree in (new.params, new.opt_state, metrics):
    leaves = float_leaves(tree)
    assert leaves and {a.dtype for a in leaves} == {jnp.dtype('float32')}
    assert all(np.isfinite(a).all() for a in leaves)
  assert {a.dtype for a in float_leaves(new.weighting_state)} <= {
    jnp.dtype('float32')
  }
  for a, b in zip(
    jax.tree.leaves(new.params), jax.tree.leaves(state.params), strict=True
  ):
    assert not np.array_equal(a, b)
  bce = {}
  for p in ('bfloat16', 'float32'):
    logits = model_of('mmoe', precision=p).apply(
      {'params': state.params}, x, train=False
    )
    bce[p] = optax.sigmoid_binary_cross_entropy(logits, y).mean(-1)
  # Jitted, XLA may round fused bfloat16 ops at other points than op by
  # op: equal within one rounding.
  np.testing.assert_allclose(metrics['loss'], bce['bfloat16'], rtol=U)
  np.testing.assert_allclose(metrics['loss'], bce['float32'], rtol=4 * U)
  assert not np.array_equal(bce['bfloat16'], bce['float32'])


def test_unknown_precision_is_one_config_error():
  with pytest.raises(ConfigError, match=r"precision is 'float16', expected"):
    model_of('mmoe', precision='float16')


def test_config_precision_is_validated_by_name():
  config = smoke.get_config('mmoe')
  validate.check_config(config)  # 'float32' by default
  assert config.precision == 'float32'
  config.precision = 'bfloat16'
  validate.check_config(config)
  config.precision = 'float16'
  with pytest.raises(ConfigError) as error:
    validate.check_config(config)
  message = str(error.value)
  assert '\n' not in message
  assert "precision 'float16' is not one of float32, bfloat16" in message
