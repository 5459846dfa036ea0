"""The dense columns' periodic (PLR) embeddings against numpy.

Oracle: Gorishniy et al., NeurIPS 2022, Sec. 3.3, written out in float64
numpy from the module's own params: per column f, ReLU(W_f [sin(2 pi c_f x),
cos(2 pi c_f x)] + b_f), the columns' d values side by side.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.layers.numeric import PeriodicEmbedding
from mtl.core.model import make_model
from mtl.errors import ConfigError


def _plr_numpy(params, dense):
  c = np.asarray(params['frequencies'], np.float64)  # [F, k]
  w = np.asarray(params['kernel'], np.float64)  # [F, 2k, d]
  b = np.asarray(params['bias'], np.float64)  # [F, d]
  out = []
  for f in range(dense.shape[1]):
    v = 2 * np.pi * dense[:, f : f + 1] * c[f][None]  # [B, k]
    p = np.concatenate([np.sin(v), np.cos(v)], axis=1)
    out.append(np.maximum(p @ w[f] + b[f], 0.0))
  return np.concatenate(out, axis=1)


def test_plr_equals_the_papers_formula():
  rng = np.random.default_rng(0)
  dense = rng.normal(size=(6, 3)).astype(np.float32)
  module = PeriodicEmbedding(frequencies=4, dim=5, sigma=0.7)
  params = module.init(jax.random.key(1), dense)['params']
  # A non-zero bias, so that the test sees where it is added.
  params = dict(params, bias=jnp.asarray(rng.normal(size=(3, 5)), jnp.float32))
  got = np.asarray(module.apply({'params': params}, dense))
  assert got.shape == (6, 15)
  want = _plr_numpy(params, dense.astype(np.float64))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert (want == 0).any() and (want > 0).any(), 'ReLU on both sides'


def test_frequencies_start_at_scale_sigma():
  module = PeriodicEmbedding(frequencies=64, dim=2, sigma=0.3)
  params = module.init(jax.random.key(0), jnp.zeros((1, 50)))['params']
  c = np.asarray(params['frequencies'])
  assert c.shape == (50, 64)
  assert abs(c.std() / 0.3 - 1) < 0.05 and abs(c.mean()) < 0.02


def _model(numeric=None):
  return make_model(
    'mmoe',
    dict(num_experts=2, expert_hidden=(4,)),
    num_tasks=2,
    vocab_sizes=(5, 7),
    embed_dim=3,
    tower_hidden=(4,),
    numeric=numeric,
  )


FEATURES = {
  'dense': np.random.default_rng(2).normal(size=(8, 2)).astype(np.float32),
  'sparse': np.random.default_rng(3).integers(0, 5, (8, 2)).astype(np.int32),
}


def test_default_is_the_plain_model_bit_for_bit():
  plain, default = _model(), _model(dict(embedding='none', sigma=3.0))
  vp = plain.init(jax.random.key(0), FEATURES, train=False)
  vd = default.init(jax.random.key(0), FEATURES, train=False)
  assert 'numeric' not in vd['params']
  np.testing.assert_array_equal(
    plain.apply(vp, FEATURES, train=False),
    default.apply(vd, FEATURES, train=False),
  )


@pytest.mark.slow
def test_the_backbone_sees_the_embedded_columns_and_they_train():
  model = _model(dict(embedding='periodic', frequencies=3, dim=4, sigma=0.5))
  variables = model.init(jax.random.key(0), FEATURES, train=False)
  numeric = variables['params']['numeric']
  assert numeric['frequencies'].shape == (2, 3)
  assert numeric['kernel'].shape == (2, 6, 4)
  # The experts' first kernel takes F * d dense values + 2 ids * 3 wide.
  expert = jax.tree.leaves(variables['params']['backbone'])
  assert any(leaf.shape[-2:] == (2 * 4 + 2 * 3, 4) for leaf in expert)

  def loss(params):
    return jnp.sum(model.apply({'params': params}, FEATURES, train=False))

  grads = jax.grad(loss)(variables['params'])['numeric']
  for name in ('frequencies', 'kernel'):
    assert np.abs(np.asarray(grads[name])).max() > 0, name


@pytest.mark.parametrize(
  'numeric, model, message',
  [
    (dict(embedding='fourier'), 'mmoe', "numeric.embedding is 'fourier'"),
    (dict(embedding='periodic', dim=0), 'mmoe', 'numeric.dim is 0'),
    (dict(embedding='periodic', frequencies=2.5), 'mmoe', 'frequencies'),
    (dict(embedding='periodic', sigma=-1.0), 'mmoe', 'numeric.sigma is -1.0'),
    (dict(embedding='periodic', sigma=True), 'mmoe', 'numeric.sigma is True'),
    (dict(embedding='periodic'), 'single_task', 'share no parameter'),
    (dict(dims=3), 'mmoe', "did you mean 'dim'"),
  ],
)
def test_bad_values_are_one_line_config_errors(numeric, model, message):
  from mtl.core.model import check_numeric

  with pytest.raises(ConfigError) as error:
    check_numeric(numeric, model)
  assert message in str(error.value)
  assert '\n' not in str(error.value)
