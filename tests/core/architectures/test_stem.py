"""STEM-Net (Su et al., AAAI 2024) against oracles written from the paper:
the layer against float64 numpy (experts on their own embeddings, gates on
v^t + v^S, every expert mixed), the all-forward / task-specific-backward
gradients (task t's loss gives zero gradient to task s's table and experts
although its logits read them), the T + 1 embedding sets through sparse
updates (against the dense step) and a population (against single runs),
the keywords' errors, and 8 devices against one."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl.core import optim, population, train_state, train_step
from mtl.core.architectures import ARCHITECTURES, STEM
from mtl.core.layers.embedding import Column, lookups
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS
from mtl.errors import ConfigError
from tests.core.architectures import data_parallel

FAST_COMPILE = {'xla_backend_optimization_level': 0}
T, B, D = 3, 6, 5
HIDDEN = (7, 4)
KWARGS = dict(num_specific_experts=2, num_shared_experts=1, expert_hidden=(4,))
PLAIN = (5, 7)  # One table 'table' [T + 1, 12, d].
COLUMNS = (Column(6, feature='user'), Column(5, feature='item'))


def f64(a):
  return np.asarray(a, np.float64)


def np_mlp(layers, x):
  """Dense -> ReLU per layer, float64: layers [(kernel, bias), ...]."""
  for kernel, bias in layers:
    x = np.maximum(x @ f64(kernel) + f64(bias), 0.0)
  return x


def np_softmax(a):
  e = np.exp(a - a.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def layers_of(mlp, *index):
  """[(kernel, bias)] of an MLP's params, sliced at `index` (a stacked
  expert's)."""
  return [
    (mlp[f'Dense_{i}']['kernel'][index], mlp[f'Dense_{i}']['bias'][index])
    for i in range(len(mlp))
  ]


def test_registry_entry_takes_one_shared_embedding_set():
  assert ARCHITECTURES['stem'] is STEM
  assert STEM.per_task_inputs and STEM.shared_inputs == 1
  assert all(
    cls.shared_inputs == 0 for n, cls in ARCHITECTURES.items() if n != 'stem'
  )


def test_layer_against_numpy():
  """z[t] = sum over all T * m_k + m_s experts of softmax((x_t + x_S) W_t)
  times the expert, task experts on x_t, shared experts on x_S."""
  m_k, m_s = 2, 2
  backbone = STEM(
    num_tasks=T,
    num_specific_experts=m_k,
    num_shared_experts=m_s,
    expert_hidden=HIDDEN,
  )
  rng = np.random.default_rng(0)
  x = rng.normal(size=(T + 1, B, D)).astype(np.float32)
  shapes = jax.eval_shape(
    functools.partial(backbone.init, train=False), jax.random.key(0), x
  )['params']
  params = jax.tree.map(
    lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes
  )
  z, state = jax.jit(
    lambda p, x: backbone.apply(
      {'params': p}, x, train=False, mutable=['intermediates']
    ),
    compiler_options=FAST_COMPILE,
  )(params, x)

  p = jax.tree.map(np.asarray, params)
  spec = p['specific_experts']['bank']['mlp']
  shared = p['shared_experts']['mlp']
  experts = [
    np_mlp(layers_of(spec, s, k), f64(x[s]))
    for s in range(T)
    for k in range(m_k)
  ] + [np_mlp(layers_of(shared, k), f64(x[T])) for k in range(m_s)]
  experts = np.stack(experts)  # [T * m_k + m_s, B, H]
  kernel = f64(p['task_gates']['gate']['kernel'])  # [T, D, E]
  assert kernel.shape == (T, D, T * m_k + m_s)
  gates = np.stack(
    [np_softmax((f64(x[t]) + f64(x[T])) @ kernel[t]) for t in range(T)]
  )
  want = np.einsum('tbe,ebh->tbh', gates, experts)
  assert z.shape == (T, B, HIDDEN[-1])
  np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-5)
  (sown,) = state['intermediates']['gates']
  np.testing.assert_allclose(sown, gates, rtol=1e-5, atol=1e-6)


def tiny_model(vocab, num_tasks=T, **kwargs):
  return make_model(
    'stem',
    {**KWARGS, **kwargs},
    num_tasks=num_tasks,
    vocab_sizes=vocab,
    embed_dim=2,
    tower_hidden=(3,),
  )


def batch_of(seed, vocab, num_tasks=T, n=8):
  rng = np.random.default_rng(seed)
  return {
    'dense': rng.normal(size=(n, 3)).astype(np.float32),
    'sparse': np.stack([rng.integers(0, int(v), n) for v in vocab], 1).astype(
      np.int32
    ),
    'labels': rng.integers(0, 2, (num_tasks, n)).astype(np.float32),
    'mask': np.ones((num_tasks, n), np.float32),
  }


@pytest.mark.parametrize('vocab', [PLAIN, COLUMNS], ids=['table', 'columns'])
def test_a_task_loss_reaches_its_own_and_the_shared_table_only(vocab):
  """The issue's oracle: d loss_t / d E^s = 0 for s != t, nonzero for E^t
  and E^S; the same for the experts. Not vacuous: logits[t] does move when
  E^s moves (the forward pass reads task s's experts)."""
  model = tiny_model(vocab)
  batch = batch_of(0, vocab)
  features = train_step.features_of(batch)
  params = model.init(jax.random.key(0), features, train=False)['params']
  tables = sorted(params['embed'])
  assert tables == (['table'] if vocab == PLAIN else ['item', 'user'])
  for name in tables:
    assert params['embed'][name].shape[0] == T + 1

  labels = jnp.asarray(batch['labels'])

  def task_loss(p, t):
    logits = model.apply({'params': p}, features, train=False)
    return optax.sigmoid_binary_cross_entropy(logits[t], labels[t]).mean()

  grads = jax.jit(
    jax.vmap(jax.grad(task_loss), in_axes=(None, 0)),
    compiler_options=FAST_COMPILE,
  )(params, jnp.arange(T))
  for t in range(T):
    for name in tables:
      g = np.asarray(grads['embed'][name][t])  # [T + 1, V, d]
      for s in range(T):
        if s == t:
          assert np.any(g[s] != 0), (t, name)
        else:
          np.testing.assert_array_equal(g[s], 0.0, err_msg=f'{t} {s}')
      assert np.any(g[T] != 0), (t, name, 'shared')
    experts = grads['backbone']['specific_experts']['bank']['mlp']
    for leaf in jax.tree.leaves(experts):
      leaf = np.asarray(leaf[t])  # [T, m_k, ...]
      for s in range(T):
        assert np.any(leaf[s] != 0) if s == t else not np.any(leaf[s])
    for leaf in jax.tree.leaves(grads['backbone']['shared_experts']):
      assert np.any(np.asarray(leaf[t]) != 0)

  # Forward transfer: moving task 1's own table moves task 0's logits.
  def logits(p):
    return model.apply({'params': p}, features, train=False)

  moved = jax.tree.map(jnp.copy, params)
  name = tables[0]
  moved['embed'][name] = moved['embed'][name].at[1].add(0.5)
  before, after = np.asarray(logits(params)), np.asarray(logits(moved))
  assert np.any(after[0] != before[0])


def test_keywords_errors_and_input_shape():
  x = np.zeros((T + 1, 2, D), np.float32)
  with pytest.raises(ConfigError, match=r'^STEM: num_specific_experts is 0'):
    STEM(num_tasks=T, num_specific_experts=0).init(
      jax.random.key(0), x, train=False
    )
  with pytest.raises(ValueError, match=r'STEM takes x \[T \+ 1, B, D\]'):
    STEM(num_tasks=T).init(jax.random.key(0), x[:T], train=False)
  # Without shared experts: task and other tasks' experts only; nothing is
  # shared for GradNorm.
  bare = STEM(num_tasks=T, num_shared_experts=0, expert_hidden=(3,))
  z = bare.init_with_output(jax.random.key(0), x, train=False)[0]
  assert z.shape == (T, 2, 3)
  assert bare.gradnorm_layer() is None


def test_numeric_embedding_is_accepted_single_task_still_refused():
  numeric = {'embedding': 'periodic', 'frequencies': 2, 'dim': 2}
  model = make_model(
    'stem',
    KWARGS,
    num_tasks=2,
    vocab_sizes=PLAIN,
    embed_dim=2,
    tower_hidden=(3,),
    numeric=numeric,
  )
  features = train_step.features_of(batch_of(0, PLAIN, 2))
  logits, variables = model.init_with_output(
    jax.random.key(0), features, train=False
  )
  assert logits.shape == (2, 8) and np.isfinite(logits).all()
  assert variables['params']['embed']['table'].shape == (3, 12, 2)
  with pytest.raises(ConfigError, match='its tasks share no parameter'):
    make_model(
      'single_task',
      {},
      num_tasks=2,
      vocab_sizes=PLAIN,
      embed_dim=2,
      tower_hidden=(3,),
      numeric=numeric,
    )


def sparse_tx(model, sparse=None):
  return optim.make_optimizer(
    'adagrad',
    0.05,
    sparse=sparse,
    table_shapes=lookups(model.vocab_sizes, model.embed_dim)[1],
  )


def run(model, tx, batches, weighting='equal'):
  w = WEIGHTINGS[weighting]()
  tasks = tuple(Task(f't{i}') for i in range(model.num_tasks))
  state = train_state.init_train_state(
    model,
    tx,
    w,
    train_step.features_of(batches[0]),
    num_tasks=model.num_tasks,
    key=jax.random.key(0),
  )
  step = jax.jit(
    train_step.make_train_step(model, tx, w, tasks, steps_per_epoch=1)
  )
  for b in batches:
    state, _ = step(state, b)
  return state


@pytest.mark.parametrize('weighting', ['equal', 'pcgrad'])
def test_sparse_adagrad_on_the_t_plus_1_sets_equals_dense(weighting):
  """The sparse step's zero rows and combined rows carry the T + 1 sets
  (sparse_train.zero_rows); a gradient-space method's per-task rows too."""
  model = tiny_model(COLUMNS, num_tasks=2)
  batches = [batch_of(seed, COLUMNS, 2) for seed in (1, 2)]
  sparse = {'tables': ('item', 'user'), 'method': 'adagrad'}
  want = run(model, sparse_tx(model), batches, weighting)
  got = run(model, sparse_tx(model, sparse), batches, weighting)
  assert got.params['embed']['user'].shape == (3, 6, 2)
  for g, w in zip(
    jax.tree.leaves(got.params), jax.tree.leaves(want.params), strict=True
  ):
    np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-7)


def test_population_of_two_equals_two_runs():
  """Members stacked [K, T + 1, V, d], a sparse table among them."""
  model = tiny_model(PLAIN, num_tasks=2)
  batches = [batch_of(seed, PLAIN, 2) for seed in (3, 4)]
  tx = sparse_tx(model, {'tables': ('table',), 'method': 'adagrad'})
  w = WEIGHTINGS['equal']()
  tasks = (Task('t0'), Task('t1'))
  features = train_step.features_of(batches[0])
  keys = [jax.random.key(0), jax.random.key(1)]
  states = population.init_population(
    model, tx, [w, w], features, num_tasks=2, init_keys=keys
  )
  assert states.params['embed']['table'].shape == (2, 3, 12, 2)
  step = train_step.make_train_step(model, tx, w, tasks, steps_per_epoch=1)
  hp = {
    'task_weights': jnp.ones((2, 2)),
    'lr_scale': jnp.asarray([1.0, 0.5]),
    'member': jnp.arange(2),
  }
  vstep = jax.jit(jax.vmap(step, in_axes=(0, None, 0)))
  for b in batches:
    states, _ = vstep(states, b, hp)
  single_step = jax.jit(step)
  for k in range(2):
    single = train_state.init_train_state(
      model, tx, w, features, num_tasks=2, key=keys[k]
    )
    hk = jax.tree.map(lambda x, k=k: x[k], hp)
    for b in batches:
      single, _ = single_step(single, b, hk)
    for g, s in zip(
      jax.tree.leaves(population.member(states, k).params),
      jax.tree.leaves(single.params),
      strict=True,
    ):
      np.testing.assert_allclose(g, s, rtol=2e-6, atol=1e-7)


def test_8_devices_equal_one():
  """The per-set tables and the stop-gradients shard like any params."""
  data_parallel.assert_devices_equal_one(
    'stem',
    dict(num_specific_experts=1, num_shared_experts=1, expert_hidden=(3,)),
  )
