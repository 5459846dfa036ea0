"""DSelect-k (Hazimeh et al., NeurIPS 2021) against float64 numpy written
from the paper's equations: the smooth-step, the gate (exactly k-sparse once
the smooth-step saturates), the regulariser and its way into the loss, the
config errors, and 8 devices against one."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import smoke
from mtl.core import train_state, train_step
from mtl.core.architectures import DSelectK
from mtl.core.architectures.base import EXTRA_LOSSES, training_logits
from mtl.core.architectures.dselect_k import DSelectGates, smooth_step
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS
from mtl.errors import ConfigError
from mtl.shell import validate
from tests.core.architectures import data_parallel

FAST_COMPILE = {'xla_backend_optimization_level': 0}
B, D = 16, 5


def np_smooth_step(u, gamma):
  """S(u): 0 below -gamma/2, 1 above gamma/2, the cubic between."""
  u = np.asarray(u, np.float64)
  cubic = -2 * u**3 / gamma**3 + 3 * u / (2 * gamma) + 0.5
  return np.where(u <= -gamma / 2, 0.0, np.where(u >= gamma / 2, 1.0, cubic))


def np_gate(x, z_kernel, a_kernel, num_experts, gamma):
  """(q [T, B, n], r [T, B, k, n], z [T, B, k, m]) in float64."""
  x = np.asarray(x, np.float64)
  t, _, k = a_kernel.shape
  m = int(np.ceil(np.log2(num_experts)))
  z = np.einsum('bd,tdj->tbj', x, np.asarray(z_kernel, np.float64))
  z = z.reshape(t, len(x), k, m)
  s = np_smooth_step(z, gamma)
  r = np.ones((t, len(x), k, num_experts))
  for expert in range(num_experts):
    for j in range(m):
      bit = (expert >> (m - 1 - j)) & 1  # Most significant bit first.
      r[..., expert] *= s[..., j] if bit else 1 - s[..., j]
  alpha = np.einsum('bd,tdk->tbk', x, np.asarray(a_kernel, np.float64))
  w = np.exp(alpha - alpha.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum('tbk,tbkn->tbn', w, r), r, z


def np_regulariser(r, entropy_weight):
  """lambda sum_i h(r_i) + [n not 2^m] sum_i (1 / sum_l r_il - 1): [T, B]."""
  term = entropy_weight * -np.sum(r * np.log(r + 1e-6), axis=(-2, -1))
  n = r.shape[-1]
  if n & (n - 1):
    term = term + np.sum(1 / r.sum(-1) - 1, axis=-1)
  return term


@functools.cache
def _gate_fn(num_experts, num_nonzeros, gamma):
  gates = DSelectGates(2, num_experts, num_nonzeros, gamma)
  return gates, jax.jit(
    lambda p, x: gates.apply({'params': p}, x), compiler_options=FAST_COMPILE
  )


def _gate_params(num_experts, num_nonzeros, scale, seed):
  m = int(np.ceil(np.log2(num_experts)))
  rng = np.random.default_rng(seed)
  return {
    'selector_logits': {
      'kernel': scale * rng.normal(size=(2, D, num_nonzeros * m))
    },
    'selector_weights': {'kernel': rng.normal(size=(2, D, num_nonzeros))},
  }


def test_smooth_step_is_the_papers_cubic_and_flat_outside():
  for gamma in (0.5, 1.0, 3.0):
    u = np.concatenate(
      [np.linspace(-1.5 * gamma, 1.5 * gamma, 61), [-gamma / 2, gamma / 2]]
    )
    got = np.asarray(smooth_step(jnp.asarray(u, jnp.float32), gamma))
    np.testing.assert_allclose(got, np_smooth_step(u, gamma), atol=1e-6)
    # S' = -6 u^2 / gamma^3 + 3 / (2 gamma) inside, 0 outside (C^1 at the
    # ends, where the cubic's slope is 0 too).
    slope = jax.vmap(jax.grad(lambda v, g=gamma: smooth_step(v, g)))(
      jnp.asarray(u, jnp.float32)
    )
    inside = np.abs(u) < gamma / 2
    want = np.where(inside, -6 * u**2 / gamma**3 + 3 / (2 * gamma), 0.0)
    np.testing.assert_allclose(slope, want, rtol=1e-5, atol=1e-5)
  assert float(smooth_step(jnp.float32(0.0), 1.0)) == 0.5


@pytest.mark.parametrize('num_experts', [4, 5])
def test_saturated_gate_is_exactly_k_sparse(num_experts):
  k, gamma, d = 2, 1.0, 24  # d > B: W solved for chosen z = x W.
  m = int(np.ceil(np.log2(num_experts)))
  rng = np.random.default_rng(num_experts)
  x = rng.normal(size=(B, d)).astype(np.float32)
  # Every |z| in [1, 3] > gamma / 2, random signs: saturated selectors.
  z_want = rng.choice([-1, 1], (2, B, k * m)) * rng.uniform(1, 3, (2, B, k * m))
  z_kernel = np.stack(
    [np.linalg.lstsq(x.astype(np.float64), z_want[t])[0] for t in range(2)]
  )
  params = {
    'selector_logits': {'kernel': z_kernel},
    'selector_weights': {'kernel': rng.normal(size=(2, d, k))},
  }
  _, fn = _gate_fn(num_experts, k, gamma)
  q, _ = fn(jax.tree.map(jnp.float32, params), x)
  q = np.asarray(q)
  want_q, _, z = np_gate(
    x,
    params['selector_logits']['kernel'],
    params['selector_weights']['kernel'],
    num_experts,
    gamma,
  )
  assert np.abs(z).min() > 0.9, 'the oracle needs saturated z'
  # Saturated: selector i picks the expert whose code is z_i's signs.
  picked = ((z > 0) * 2 ** np.arange(m - 1, -1, -1)).sum(-1)  # [T, B, k]
  for t in range(2):
    for b in range(B):
      support = {int(e) for e in picked[t, b] if e < num_experts}
      assert set(np.flatnonzero(q[t, b])) == support
      assert len(support) <= k
  assert (np.count_nonzero(q, axis=-1) == k).any()  # Exactly k, typically.
  np.testing.assert_allclose(q, want_q, rtol=1e-5, atol=1e-7)
  if num_experts == 4:  # Every code names an expert: q sums to 1.
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-6)


def test_gate_against_numpy_inside_the_cubic():
  num_experts, k, gamma = 6, 3, 2.0
  params = _gate_params(num_experts, k, scale=0.3, seed=3)
  x = np.random.default_rng(4).normal(size=(B, D)).astype(np.float32)
  _, fn = _gate_fn(num_experts, k, gamma)
  q, r = fn(jax.tree.map(jnp.float32, params), x)
  want_q, want_r, z = np_gate(
    x,
    params['selector_logits']['kernel'],
    params['selector_weights']['kernel'],
    num_experts,
    gamma,
  )
  assert (np.abs(z) < gamma / 2).mean() > 0.5  # Mostly not saturated.
  np.testing.assert_allclose(r, want_r, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(q, want_q, rtol=1e-5, atol=1e-7)


def test_regulariser_enters_the_training_loss_only():
  """training_logits' extra terms are the numpy regulariser; the train
  step's loss is the mean of BCE + that term; evaluation sows nothing."""
  lam, n = 0.3, 3  # 3 experts: 2 bits, one code names no expert.
  model = make_model(
    'dselect_k',
    dict(num_experts=n, num_nonzeros=2, entropy_weight=lam, expert_hidden=(4,)),
    num_tasks=2,
    vocab_sizes=(),
    embed_dim=2,
    tower_hidden=(3,),
  )
  rng = np.random.default_rng(5)
  batch = {
    'dense': rng.normal(size=(B, D)).astype(np.float32),
    'sparse': np.zeros((B, 0), np.int32),
    'labels': rng.integers(0, 2, (2, B)).astype(np.float32),
    'mask': np.ones((2, B), np.float32),
  }
  features = train_step.features_of(batch)
  tx = optax.sgd(0.0)
  weighting = WEIGHTINGS['equal']()
  state = train_state.init_train_state(
    model, tx, weighting, features, num_tasks=2, key=jax.random.key(0)
  )
  params = state.params
  logits, extra = jax.jit(
    lambda p: training_logits(
      model, {'params': p}, features, jax.random.key(0)
    ),
    compiler_options=FAST_COMPILE,
  )(params)
  gates = params['backbone']['gates']
  _, r, _ = np_gate(
    batch['dense'],
    gates['selector_logits']['kernel'],
    gates['selector_weights']['kernel'],
    n,
    1.0,
  )
  want = np_regulariser(r, lam)
  assert np.abs(want).max() > 1e-3  # Not a vacuous comparison.
  np.testing.assert_allclose(extra, want, rtol=1e-5, atol=1e-6)

  step = jax.jit(
    train_step.make_train_step(
      model, tx, weighting, (Task('a'), Task('b')), steps_per_epoch=1
    ),
    compiler_options=FAST_COMPILE,
  )
  _, metrics = step(state, batch)
  y, x = batch['labels'], np.asarray(logits, np.float64)
  bce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
  np.testing.assert_allclose(
    metrics['loss'], (bce + want).mean(1), rtol=1e-5, atol=1e-6
  )
  _, sown = model.apply(
    {'params': params}, features, train=False, mutable=[EXTRA_LOSSES]
  )
  assert not jax.tree.leaves(sown)


@pytest.mark.parametrize(
  ('kwargs', 'message'),
  [
    (dict(num_experts=1), 'model.num_experts is 1, expected an int >= 2'),
    (
      dict(num_experts=4, num_nonzeros=5),
      'model.num_nonzeros is 5, expected an int in [1, 4]',
    ),
    (dict(num_nonzeros=0), 'model.num_nonzeros is 0, expected an int in'),
    (dict(gamma=0.0), 'model.gamma is 0.0, expected a finite number > 0'),
    (dict(entropy_weight=-1.0), 'model.entropy_weight is -1.0, expected'),
  ],
)
def test_out_of_range_keywords_are_one_config_error_line(kwargs, message):
  with pytest.raises(ConfigError) as err:
    DSelectK(num_tasks=2, **kwargs)
  assert str(err.value).startswith(message) and '\n' not in str(err.value)


@pytest.mark.parametrize(
  ('key', 'value', 'message'),
  [
    ('gamma', -1.0, 'model.gamma is -1.0, expected a number > 0'),
    ('entropy_weight', -0.5, 'model.entropy_weight is -0.5, expected a num'),
    ('num_nonzeros', 0, 'model.num_nonzeros is 0, expected >= 1'),
  ],
)
def test_validate_names_the_key_before_any_work(key, value, message):
  values = smoke.get_config('mmoe').to_dict()
  values['model_name'] = 'dselect_k'
  values['model'][key] = value
  with pytest.raises(ConfigError) as err:
    validate.check_config(ml_collections.ConfigDict(values))
  assert str(err.value).startswith(message)


def test_8_devices_equal_one_with_the_regulariser():
  last = data_parallel.assert_devices_equal_one(
    'dselect_k',
    dict(num_experts=3, num_nonzeros=2, entropy_weight=0.5, expert_hidden=(4,)),
  )
  assert np.isfinite(np.asarray(last['loss'])).all()
