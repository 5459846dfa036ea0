"""config.embedding.dtype: 'float32' is the plain program bit for bit;
'bfloat16' stores the embedding tables in bfloat16 (2 bytes an entry),
looks them up as float32 and keeps the optimizer state float32
(mtl/core/precision.py, layers/embedding.py, sparse.py).

Oracles: numpy's (ml_dtypes') round-to-nearest bfloat16 of float32 values;
the float32 program run on the float32 view of the same params (the same
numbers); numpy's Adam update from the step's float32 moments, rounded
once to bfloat16; the single-device step for 8 emulated devices.
"""

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

from configs import smoke
from mtl.core import optim, parallel, precision, train_state, train_step
from mtl.core.layers.embedding import Column, FeatureEmbedding, lookups
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS
from mtl.errors import ConfigError
from mtl.shell import checkpoint, trainer, validate

VOCAB = (5, 7)  # One shared table of 12 rows.
D, F, T = 3, 2, 2
TASKS = (Task('a'), Task('b'))
LR, B1, B2, EPS = 0.05, 0.9, 0.999, 1e-8
FAST_COMPILE = {'xla_backend_optimization_level': 0}
BF16 = ml_dtypes.bfloat16


def model_of(**kw):
  return make_model(
    'mmoe',
    {'num_experts': 2, 'expert_hidden': (4,)},
    num_tasks=T,
    vocab_sizes=VOCAB,
    embed_dim=D,
    tower_hidden=(3,),
    **kw,
  )


def batch_of(seed=0, n=16):
  rng = np.random.default_rng(seed)
  return {
    'dense': rng.normal(size=(n, F)).astype(np.float32),
    'sparse': np.stack([rng.integers(0, v, n) for v in VOCAB], axis=1).astype(
      np.int32
    ),
    'labels': rng.integers(0, 2, (T, n)).astype(np.float32),
    'mask': np.ones((T, n), np.float32),
  }


def sparse_tx(method='lazy_adam', **kw):
  """A SparseTables: the table by `method` ('': none, kw's row L2 only)."""
  return optim.make_optimizer(
    'adam',
    LR,
    sparse={'min_rows': 1, 'method': method} if method else None,
    table_shapes=lookups(VOCAB, D)[1],
    **kw,
  )


def init(model, tx, key=0):
  return train_state.init_train_state(
    model,
    tx,
    WEIGHTINGS['equal'](),
    train_step.features_of(batch_of()),
    num_tasks=T,
    key=jax.random.key(key),
  )


def step_of(model, tx, axis_name=None):
  return train_step.make_train_step(
    model,
    tx,
    WEIGHTINGS['equal'](),
    TASKS,
    steps_per_epoch=1,
    axis_name=axis_name,
  )


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def numpy_adam(old, mu, nu):
  """numpy's float32 Adam step of count 1 from the moments (optax's order),
  added in float32 and rounded once to the nearest bfloat16."""
  f = np.float32
  mu_hat = mu / (f(1) - f(B1))
  nu_hat = nu / (f(1) - f(B2))
  u = f(-LR) * (mu_hat / (np.sqrt(nu_hat) + f(EPS)))
  return (np.asarray(old, np.float32) + u).astype(BF16)


def test_float32_is_the_default_program_bit_for_bit():
  """Unset and 'float32': the same params, logits, gradients and one
  train step, bit for bit; no bfloat16 anywhere in the step."""
  tx = optax.adam(LR)
  default, f32 = model_of(), model_of(embedding_dtype='float32')
  s0, s1 = init(default, tx), init(f32, tx)
  assert_trees_equal(s1.params, s0.params)
  b = batch_of(1)
  x = train_step.features_of(b)

  def loss(model, params):
    logits = model.apply({'params': params}, x, train=False)
    return optax.sigmoid_binary_cross_entropy(logits, b['labels']).mean(), (
      logits
    )

  (la, ga), (lb, gb) = (
    jax.jit(jax.value_and_grad(functools.partial(loss, m), has_aux=True))(
      s0.params
    )
    for m in (default, f32)
  )
  assert_trees_equal(la, lb)  # The loss and the logits.
  assert_trees_equal(ga, gb)
  new0, m0 = jax.jit(step_of(default, tx))(s0, b)
  new1, m1 = jax.jit(step_of(f32, tx))(s1, b)
  assert_trees_equal(new1.params, new0.params)
  assert_trees_equal(new1.opt_state, new0.opt_state)
  assert_trees_equal(m1, m0)
  jaxpr = str(jax.make_jaxpr(step_of(f32, tx))(s1, b))
  assert 'bf16' not in jaxpr


def test_bfloat16_table_is_numpys_rounding_and_lookups_are_float32():
  f32, bf16 = model_of(), model_of(embedding_dtype='bfloat16')
  tx = optax.adam(LR)
  p32 = init(f32, tx).params
  p16 = init(bf16, precision.float32_moments(tx)).params
  t32, t16 = p32['embed']['table'], p16['embed']['table']
  assert t16.dtype == jnp.bfloat16 and t16.shape == (sum(VOCAB), D)
  # Initialised as float32, each entry rounded to the nearest bfloat16.
  want = np.asarray(t32).astype(BF16)
  np.testing.assert_array_equal(
    np.asarray(t16).view(np.uint16), want.view(np.uint16)
  )
  assert not np.array_equal(np.asarray(t16, np.float32), np.asarray(t32))
  rest = lambda p: {k: v for k, v in p.items() if k != 'embed'}  # noqa: E731
  assert_trees_equal(rest(p16), rest(p32))  # Everything else float32.
  # The lookup: numpy's rows of the rounded table, as float32.
  b = batch_of(2)
  layer = FeatureEmbedding(VOCAB, D, 'bfloat16')
  x = layer.apply({'params': {'table': t16}}, b['dense'], b['sparse'])
  offsets = np.cumsum((0,) + VOCAB[:-1])
  rows = want.astype(np.float32)[b['sparse'] + offsets].reshape(16, -1)
  assert x.dtype == jnp.float32
  np.testing.assert_array_equal(x, np.concatenate([b['dense'], rows], 1))
  # The model: the float32 program on the float32 view, bit for bit.
  feats = train_step.features_of(b)
  got = bf16.apply({'params': p16}, feats, train=False)
  view = precision.float32_view(p16)
  assert view['embed']['table'].dtype == jnp.float32
  np.testing.assert_array_equal(
    got, f32.apply({'params': view}, feats, train=False)
  )


def _assert_rounded(p16, p32):
  assert sorted(p16) == sorted(p32)
  for name in p16:
    assert p16[name].dtype == jnp.bfloat16
    want = np.asarray(p32[name]).astype(BF16)
    np.testing.assert_array_equal(
      np.asarray(p16[name]).view(np.uint16), want.view(np.uint16)
    )


def test_per_feature_and_per_task_tables_are_stored_in_bfloat16():
  """Column tables (rows 0 and 1 zero) and a per-task backbone's [T, V, d]
  tables: float32's initial values rounded to bfloat16."""
  cols = (Column(6, feature='u'), Column(4, feature='i', dim=2))
  b = batch_of(4)
  sparse = np.stack([b['sparse'][:, 0] % 6, b['sparse'][:, 1] % 4], 1)
  key = jax.random.key(1)
  p16, p32 = (
    FeatureEmbedding(cols, D, dt).init(key, b['dense'], sparse)['params']
    for dt in ('bfloat16', 'float32')
  )
  _assert_rounded(p16, p32)
  np.testing.assert_array_equal(np.asarray(p16['u'], np.float32)[:2], 0.0)
  p16, p32 = (
    make_model(
      'single_task',
      {'hidden': (4,)},
      num_tasks=T,
      vocab_sizes=VOCAB,
      embed_dim=D,
      tower_hidden=(3,),
      embedding_dtype=dt,
    ).init(key, train_step.features_of(b), train=False)['params']['embed']
    for dt in ('bfloat16', 'float32')
  )
  assert p16['table'].shape == (T, sum(VOCAB), D)
  _assert_rounded(p16, p32)


def _steps(tx16, tx32):
  """One step of the bfloat16 run and of the float32 program on the
  float32 view of the same state: (old16, new16, new32)."""
  b = batch_of(3)
  m16, m32 = model_of(embedding_dtype='bfloat16'), model_of()
  s16 = init(m16, tx16)
  s32 = s16._replace(
    params=precision.float32_view(s16.params),
    opt_state=tx32.init(precision.float32_view(s16.params)),
  )
  assert_trees_equal(s16.opt_state, s32.opt_state)  # float32 moments
  new16, _ = jax.jit(step_of(m16, tx16), compiler_options=FAST_COMPILE)(s16, b)
  new32, _ = jax.jit(step_of(m32, tx32), compiler_options=FAST_COMPILE)(s32, b)
  return s16, new16, new32, b


def _check_against_float32(old16, new16, new32):
  t16 = new16.params['embed']['table']
  assert t16.dtype == jnp.bfloat16
  # 2 bytes an entry: 2 * D bytes less a row than float32.
  assert t16.nbytes == sum(VOCAB) * D * 2
  # The moments and every other param are the float32 program's exactly;
  # the table is its float32 result rounded once.
  assert_trees_equal(new16.opt_state, new32.opt_state)
  for leaf in jax.tree.leaves(new16.opt_state):
    assert leaf.dtype != jnp.bfloat16
  rest = lambda p: {k: v for k, v in p.items() if k != 'embed'}  # noqa: E731
  assert_trees_equal(rest(new16.params), rest(new32.params))
  want = np.asarray(new32.params['embed']['table']).astype(BF16)
  np.testing.assert_array_equal(
    np.asarray(t16).view(np.uint16), want.view(np.uint16)
  )
  old = np.asarray(old16.params['embed']['table'])
  assert not np.array_equal(np.asarray(t16), old)


def test_dense_adam_step_equals_numpy():
  tx = optax.adam(LR, b1=B1, b2=B2, eps=EPS)
  old16, new16, new32, _ = _steps(precision.float32_moments(tx), tx)
  _check_against_float32(old16, new16, new32)
  adam = new16.opt_state[0]
  mu, nu = (np.asarray(m['embed']['table']) for m in (adam.mu, adam.nu))
  assert mu.dtype == nu.dtype == np.float32
  want = numpy_adam(old16.params['embed']['table'], mu, nu)
  np.testing.assert_array_equal(
    np.asarray(new16.params['embed']['table']).view(np.uint16),
    want.view(np.uint16),
  )


def test_sparse_lazy_adam_step_equals_numpy():
  tx = sparse_tx()
  old16, new16, new32, b = _steps(precision.float32_moments(tx), tx)
  _check_against_float32(old16, new16, new32)
  state = new16.opt_state['sparse']['table']
  mu, nu = np.asarray(state['mu']), np.asarray(state['nu'])
  assert mu.dtype == nu.dtype == np.float32
  old = old16.params['embed']['table']
  touched = np.zeros(sum(VOCAB), bool)
  touched[(b['sparse'] + np.cumsum((0,) + VOCAB[:-1])).ravel()] = True
  assert 0 < touched.sum() < sum(VOCAB)
  want = np.where(touched[:, None], numpy_adam(old, mu, nu), np.asarray(old))
  got = np.asarray(new16.params['embed']['table'])
  np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize('backend', parallel.BACKENDS)
@pytest.mark.parametrize('kind', ['dense', 'rows_l2', 'sparse'])
def test_8_devices_equal_one(kind, backend):
  """3 steps on 8 emulated devices (4 rows each) against one device on the
  32-row batches: Adam; Adam with L2 on the touched rows of the dense
  table; lazy Adam on the sparse table with that L2 and clipping. As in
  tests/core/test_wide_parallel.py, the psum adds in another order (a few
  float32 ulps); a bfloat16 rounding may then flip by one bfloat16 ulp
  (measured: none, the tables equal bit for bit in all six cases)."""
  assert jax.device_count() == 8
  base = {
    'dense': lambda: optax.adam(LR),
    'rows_l2': lambda: sparse_tx('', embedding_l2=0.01),
    'sparse': lambda: sparse_tx(embedding_l2=0.01, grad_clip_norm=0.5),
  }[kind]()
  tx = precision.float32_moments(base)
  model = model_of(embedding_dtype='bfloat16')
  batches = [batch_of(10 + i, n=32) for i in range(3)]
  want = init(model, tx)
  single = jax.jit(step_of(model, tx))
  for b in batches:
    want, _ = single(want, b)
  run = parallel.make_parallel_train_step(
    step_of(model, tx, axis_name='data'), backend=backend
  )
  got = init(model, tx)
  for b in batches:
    got, m = run(got, b)
    jax.block_until_ready(m)
  t_got = np.asarray(got.params['embed']['table'])
  t_want = np.asarray(want.params['embed']['table'])
  assert t_got.dtype == BF16
  np.testing.assert_allclose(
    t_got.astype(np.float32), t_want.astype(np.float32), rtol=2.0**-7
  )
  for g, w in zip(
    jax.tree.leaves((got.params, got.opt_state)),
    jax.tree.leaves((want.params, want.opt_state)),
    strict=True,
  ):
    assert g.dtype == w.dtype
    np.testing.assert_allclose(
      np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=1e-5, atol=1e-6
    )


def test_config_embedding_dtype_is_validated_by_name():
  config = smoke.get_config('mmoe')
  assert config.embedding.dtype == 'float32'
  validate.check_config(config)
  config.embedding.dtype = 'bfloat16'
  validate.check_config(config)
  config.embedding.dtype = 'float16'
  with pytest.raises(ConfigError) as error:
    validate.check_config(config)
  message = str(error.value)
  assert '\n' not in message
  assert "embedding.dtype 'float16' is not one of float32, bfloat16" in message


def _census(data_dir, **overrides):
  config = smoke.get_config('mmoe,census')
  config.dataset.data_dir = str(data_dir)
  config.update(
    dict(batch_size=8192, num_epochs=1, eval_batch_size=16384, **overrides)
  )
  config.checkpoint.async_save = False
  return config


@pytest.mark.slow
def test_a_run_keeps_bfloat16_tables_and_init_from_rounds_float32_ones(
  tmp_path, census_tfds_dir
):
  """A bfloat16 run (warm-started from a float32 run's params, which
  init_from rounds to bfloat16) checkpoints a bfloat16 table beside
  float32 params and optimizer state, and trains."""
  trainer.train(_census(census_tfds_dir), tmp_path / 'f32')
  config = _census(census_tfds_dir, init_from=str(tmp_path / 'f32'))
  config.embedding.dtype = 'bfloat16'
  result = trainer.train(config, tmp_path / 'bf16')
  ckpt = checkpoint.Checkpointer(
    tmp_path / 'bf16' / 'checkpoints', read_only=True, async_save=False
  )
  try:
    saved = ckpt.saved_tree(ckpt.all_steps()[-1])
  finally:
    ckpt.close()
  assert saved['params']['embed']['table'].dtype == jnp.bfloat16
  rest = [saved['params'][k] for k in saved['params'] if k != 'embed']
  floats = {
    str(a.dtype)
    for a in jax.tree.leaves((rest, saved['opt_state']))
    if jnp.issubdtype(a.dtype, jnp.floating)
  }
  assert floats == {'float32'}
  assert 0.6 < result['test']['test/auc/income'] < 1.0
