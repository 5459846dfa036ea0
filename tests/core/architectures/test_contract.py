"""The model contract, checked for every entry of ARCHITECTURES.

A new architecture is tested here as soon as it is added to the dict; its
constructor keywords get tiny values from FIELD_VALUES by name.

Speed: on CPU, XLA compile time dominates these tests, and most of it is spent
optimising RNG code (init, dropout). So params are random normals of the shapes
`init` declares (traced by eval_shape, never compiled; real inits are tested in
tests/core/test_model.py and tests/core/layers), and programs are compiled with
backend
optimisation off.
"""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl.core.architectures import ARCHITECTURES
from mtl.core.architectures.base import Architecture, input_sets
from mtl.core.model import make_model

B, F, EMBED_DIM = 8, 3, 2
VOCAB_SIZES = (4, 5)
TOWER_HIDDEN = (3,)
# (T, S): two tasks with categorical features, three tasks without any
# (the synthetic dataset has S = 0).
CASES = [(2, 2), (3, 0)]
FIELD_VALUES = {
  'hidden': (8, 6),
  'expert_hidden': (6,),
  'num_experts': 3,
  'num_specific_experts': 2,
  'num_shared_experts': 1,
  'num_levels': 2,
}
NAMES = sorted(ARCHITECTURES)
FAST_COMPILE = {'xla_backend_optimization_level': 0}


def tiny_kwargs(name: str, **overrides) -> dict:
  kwargs = {}
  for field in dataclasses.fields(ARCHITECTURES[name]):
    if not field.init or field.name in ('num_tasks', 'parent', 'name'):
      continue
    if field.name in FIELD_VALUES:
      kwargs[field.name] = FIELD_VALUES[field.name]
    elif field.default is dataclasses.MISSING:
      pytest.fail(
        f'{name}: add a tiny value for {field.name!r} to FIELD_VALUES'
      )
  kwargs.update(overrides)
  return kwargs


def outputs_of(name: str, num_tasks: int) -> int:
  """ESMM always has 3 outputs (click, ctcvr, cvr); others one per task."""
  return ARCHITECTURES[name].fixed_num_tasks or num_tasks


def model_of(name: str, num_tasks: int, num_sparse: int, dropout: float = 0.0):
  num_tasks = outputs_of(name, num_tasks)
  return make_model(
    name,
    tiny_kwargs(name, dropout=dropout),
    num_tasks=num_tasks,
    vocab_sizes=VOCAB_SIZES[:num_sparse],
    embed_dim=EMBED_DIM,
    tower_hidden=TOWER_HIDDEN,
    tower_dropout=dropout,
  )


def batch_of(seed: int, num_tasks: int, num_sparse: int) -> dict:
  rng = np.random.default_rng(seed)
  sparse = [rng.integers(0, v, B) for v in VOCAB_SIZES[:num_sparse]]
  return {
    'dense': rng.normal(size=(B, F)).astype(np.float32),
    'sparse': np.stack(sparse, 1).astype(np.int32)
    if sparse
    else np.zeros((B, 0), np.int32),
    'labels': rng.integers(0, 2, (num_tasks, B)).astype(np.float32),
  }


def features(batch):
  return {'dense': batch['dense'], 'sparse': batch['sparse']}


def jit(fn):
  return jax.jit(fn, compiler_options=FAST_COMPILE)


@functools.cache
def init_params(name: str, num_tasks: int, num_sparse: int):
  """Random params of the shapes the model's init declares."""
  model = model_of(name, num_tasks, num_sparse)
  example = features(batch_of(0, num_tasks, num_sparse))
  shapes = jax.eval_shape(
    functools.partial(model.init, train=False), jax.random.key(0), example
  )['params']
  rng = np.random.default_rng(0)

  def draw(s):
    assert s.dtype == jnp.float32
    scale = 1.0 / np.sqrt(s.shape[-2]) if len(s.shape) >= 2 else 0.1
    return jnp.asarray(scale * rng.normal(size=s.shape), jnp.float32)

  return jax.tree.map(draw, shapes)


@pytest.mark.parametrize('name', NAMES)
def test_declares_per_task_inputs(name):
  assert isinstance(ARCHITECTURES[name].per_task_inputs, bool)


@pytest.mark.parametrize('name', NAMES)
def test_implements_the_architecture_protocol(name):
  cls = ARCHITECTURES[name]
  backbone = cls(num_tasks=outputs_of(name, 2), **tiny_kwargs(name))
  assert isinstance(backbone, Architecture)
  assert cls.shared_params in ('backbone', 'embed')


@pytest.mark.parametrize('name', NAMES)
def test_gradnorm_layer_is_a_shared_kernel_of_the_params(name):
  """The declared layer exists, is a kernel, and is not task-specific: its
  gradient moves with every task's loss."""
  num_tasks = outputs_of(name, 2)
  model = model_of(name, 2, 2)
  path = model.backbone.gradnorm_layer()
  if name == 'single_task':
    assert path is None  # Shares nothing.
    return
  params = init_params(name, 2, 2)
  leaf = params
  for key in path:
    leaf = leaf[key]
  assert path[-1] in ('kernel', 'table') and leaf.ndim >= 2
  batch = batch_of(1, num_tasks, 2)

  def layer_grad_sums(p):
    """sum |d/d layer of sum(logits[t] ** 2)| for every task t, in one
    program: one forward pass, its backward pass vmapped over the tasks (a
    cotangent 2 logits[t] on task t's row, zero on the others)."""
    logits, vjp = jax.vjp(
      lambda p: model.apply({'params': p}, features(batch), train=False), p
    )
    rows = jnp.eye(num_tasks, dtype=logits.dtype)[:, :, None]
    (g,) = jax.vmap(vjp)(rows * 2 * logits)
    for key in path:
      g = g[key]
    return jnp.abs(g).reshape(num_tasks, -1).sum(1)

  sums = np.asarray(jit(layer_grad_sums)(params))
  assert sums.shape == (num_tasks,)
  for t in range(num_tasks):
    assert float(sums[t]) > 0, (name, t)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('num_tasks', [2, 3])
def test_backbone_returns_task_leading_representations(name, num_tasks):
  cls = ARCHITECTURES[name]
  num_tasks = outputs_of(name, num_tasks)
  backbone = cls(num_tasks=num_tasks, **tiny_kwargs(name))
  towers = cls.num_towers or num_tasks
  d = 7
  sets = input_sets(backbone)
  x = np.zeros((B, d) if sets is None else (sets, B, d), np.float32)
  z, _ = jax.eval_shape(
    functools.partial(backbone.init_with_output, train=False),
    jax.random.key(0),
    x,
  )
  assert z.shape[:2] == (towers, B) and z.ndim == 3
  assert z.dtype == jnp.float32


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize(('num_tasks', 'num_sparse'), CASES)
def test_logits_and_gradients_without_retracing(name, num_tasks, num_sparse):
  num_tasks = outputs_of(name, num_tasks)
  model = model_of(name, num_tasks, num_sparse)
  params = init_params(name, num_tasks, num_sparse)
  expected_top = {'backbone', 'towers'} | ({'embed'} if num_sparse else set())
  assert set(params) == expected_top

  chex.clear_trace_counter()

  @jit
  @chex.assert_max_traces(n=1)
  def step(params, batch):
    def loss_fn(p):
      logits = model.apply({'params': p}, features(batch), train=True)
      bce = optax.sigmoid_binary_cross_entropy(logits, batch['labels'])
      return bce.mean(), logits

    (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return logits, grads

  for seed in range(3):  # New data, same shapes: must reuse the trace.
    logits, grads = step(params, batch_of(seed, num_tasks, num_sparse))
  assert logits.shape == (num_tasks, B) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    where = jax.tree_util.keystr(path)
    assert g.dtype == jnp.float32, where
    assert np.isfinite(np.asarray(g)).all(), where
    assert np.any(np.asarray(g) != 0), f'no gradient reaches {where}'


@pytest.mark.parametrize('name', NAMES)
def test_dropout_only_when_training_and_gates_are_sown(name):
  num_tasks, num_sparse = CASES[0]
  num_tasks = outputs_of(name, num_tasks)
  # Dropout adds no params: the dropout-free model's params fit.
  params = init_params(name, num_tasks, num_sparse)
  model = model_of(name, num_tasks, num_sparse, dropout=0.5)
  x = features(batch_of(1, num_tasks, num_sparse))

  def evaluate(p, x):  # No rng is given: evaluation must not draw one.
    return model.apply({'params': p}, x, train=False, mutable=['intermediates'])

  def train(p, x, key):
    return model.apply({'params': p}, x, train=True, rngs={'dropout': key})

  # Evaluation and training in one program (one compile, not two), run
  # twice: evaluation gives the same logits, each key other dropout.
  run = jit(lambda p, x, key: (evaluate(p, x), train(p, x, key)))
  (logits, state), a = run(params, x, jax.random.key(1))
  (again, _), b = run(params, x, jax.random.key(2))
  np.testing.assert_array_equal(logits, again)
  assert not np.allclose(a, b)
  assert not np.allclose(a, logits)

  gates = [
    leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(state)
    if any(getattr(k, 'key', None) == 'gates' for k in path)
  ]
  if name in ('omoe', 'mmoe', 'cgc', 'ple'):
    assert gates, f'{name} sowed no gates'
  for g in gates:
    assert g.shape[:2] == (num_tasks, B) and g.ndim == 3
    np.testing.assert_allclose(np.sum(g, -1), 1.0, rtol=1e-5)
    assert (np.asarray(g) >= 0).all()
