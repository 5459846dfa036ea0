"""Sparse embedding updates in the train step (mtl/core/sparse_train.py).

Oracles: the dense train step with the optax optimizer whose maths the
sparse one shares (Adagrad: the same on every row; lazy Adam: the same as
Adam when every row is touched at every step), the initial table for the
rows no step touched (bit for bit), the one-device step for 8 devices, K
single runs for a vmapped population, and an uninterrupted run for a
resumed one.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core import optim, parallel, population, train_state, train_step
from mtl.core.layers.embedding import Column, lookups
from mtl.core.model import make_model
from mtl.core.tasks import Task
from mtl.core.weighting import WEIGHTINGS
from mtl.errors import ConfigError

SIZES = {
  'single_task': dict(hidden=(4,)),
  'shared_bottom': dict(hidden=(4,)),
  'omoe': dict(num_experts=2, expert_hidden=(4,)),
  'mmoe': dict(num_experts=2, expert_hidden=(4,)),
  'cgc': dict(num_specific_experts=1, num_shared_experts=1, expert_hidden=(4,)),
  'ple': dict(
    num_levels=2, num_specific_experts=1, num_shared_experts=1,
    expert_hidden=(4,),
  ),
  'esmm': dict(hidden=(4,)),
  'aitm': dict(hidden=(4,)),
}  # fmt: skip
PLAIN = (5, 7)  # One shared table 'table' of 12 rows.
# Per-feature tables; the history shares the item table (id 0: padding).
COLUMNS = (
  Column(6, feature='user'),
  Column(5, feature='item'),
  *[Column(5, feature='hist', table='item', pooling='mean')] * 3,
)
RTOL, ATOL = 2e-6, 1e-7


def _model(name='mmoe', vocab=PLAIN):
  """One model object per (name, vocab) however it is asked for, so tests
  of one model share its compiled steps and initial state."""
  return _cached_model(name, vocab)


@functools.cache
def _cached_model(name, vocab):
  tasks = 3 if name in ('esmm', 'aitm') else 2
  return make_model(
    name,
    SIZES[name],
    num_tasks=tasks,
    vocab_sizes=vocab,
    embed_dim=3,
    tower_hidden=(4,),
  )


def _tasks(model):
  return tuple(Task(f't{i}') for i in range(model.num_tasks))


def _batch(rng, vocab, n=16, touch_all=False, skip=()):
  """ids uniform over each column's vocabulary minus `skip` (table rows
  never looked up); with touch_all, every id of every column appears."""
  cols = []
  for v in vocab:
    allowed = np.setdiff1d(np.arange(int(v)), skip)
    c = rng.choice(allowed, n)
    if touch_all:
      c[: len(allowed)] = allowed
    cols.append(c)
  return {
    'dense': rng.normal(size=(n, 3)).astype(np.float32),
    'sparse': np.stack(cols, 1).astype(np.int32),
    'labels': rng.integers(0, 2, (2, n)).astype(np.float32),
    'mask': np.ones((2, n), np.float32),
  }


def _fit(batch, model):
  t = model.num_tasks
  labels = np.resize(batch['labels'], (t, batch['labels'].shape[1]))
  return dict(batch, labels=labels, mask=np.ones_like(labels))


_STEPS = {}


def _step(model, tx, weighting, axis=None, backend=None):
  """The compiled step, once per (model, optimizer, method, devices)."""
  key = (id(model), id(tx), id(weighting), axis, backend)
  if key not in _STEPS:
    step = train_step.make_train_step(
      model, tx, weighting, _tasks(model), steps_per_epoch=1, axis_name=axis
    )
    _STEPS[key] = (
      (
        jax.jit(step)
        if axis is None
        else parallel.make_parallel_train_step(step, backend=backend)
      ),
      (model, tx, weighting),
    )  # Keeps the ids alive.
  return _STEPS[key][0]


_INITS = {}


def _init(model, tx, weighting, features):
  """init_train_state from key 0, once per (model, optimizer, method,
  features); a fresh copy each call (the step donates its state). The
  optimizer's and the method's states are made op by op, each primitive
  compiled: the tests that start several runs from one state share it
  instead of paying again."""
  k = (id(model), id(tx), id(weighting))
  k += tuple((a.shape, a.dtype.name) for a in jax.tree.leaves(features))
  if k not in _INITS:
    state = train_state.init_train_state(
      model,
      tx,
      weighting,
      features,
      num_tasks=model.num_tasks,
      key=jax.random.key(0),
    )
    _INITS[k] = (state, (model, tx, weighting))  # Keeps the ids alive.
  return jax.tree.map(jnp.copy, _INITS[k][0])


def _run(model, tx, weighting, batches, *, axis=None, backend=None):
  """(initial params, the state after a step per batch)."""
  state = _init(model, tx, weighting, train_step.features_of(batches[0]))
  init = jax.tree.map(np.asarray, state.params)  # The state is donated.
  run = _step(model, tx, weighting, axis, backend)
  for b in batches:
    state, metrics = run(state, b)
    jax.block_until_ready(metrics)
  return init, state


def _tx(name, model, *, sparse=None, lr=0.05, **kw):
  """The run's optimizer; one object per arguments (compiled steps reuse)."""
  frozen = tuple(sorted((sparse or {}).items()))
  return _cached_tx(name, model, frozen, lr, tuple(sorted(kw.items())))


@functools.cache
def _cached_tx(name, model, sparse, lr, kw):
  return optim.make_optimizer(
    name,
    lr,
    schedule='constant',
    sparse=dict(sparse) or None,
    table_shapes=lookups(model.vocab_sizes, model.embed_dim)[1],
    **dict(kw),
  )


@functools.cache
def _weighting(name):
  return WEIGHTINGS[name]()


def _close(got, want):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def test_lazy_adam_touching_every_row_equals_adam_and_not_otherwise():
  model = _model(vocab=COLUMNS)
  rng = np.random.default_rng(1)
  batches = [_batch(rng, COLUMNS, touch_all=True) for _ in range(3)]
  w = _weighting('equal')
  dense = _tx('adam', model)
  lazy = _tx('adam', model, sparse={'min_rows': 5, 'method': 'lazy_adam'})
  assert sorted(lazy.tables) == ['item', 'user']  # By size.
  _, want = _run(model, dense, w, batches)
  _, got = _run(model, lazy, w, batches)
  _close(got.params, want.params)
  _close(
    got.opt_state['sparse']['user']['nu'], want.opt_state[0].nu['embed']['user']
  )
  # Row 4 looked up at step 1 only: dense Adam moves it on (its moments
  # decay), lazy Adam leaves it and its moments as step 1 left them.
  batches = batches[:1] + [_batch(rng, COLUMNS, skip=(4,)) for _ in range(2)]
  _, once = _run(model, lazy, w, batches[:1])
  _, want = _run(model, dense, w, batches)
  _, got = _run(model, lazy, w, batches)
  user = lambda s: (  # noqa: E731
    s.params['embed']['user'][4],
    s.opt_state['sparse']['user']['mu'][4],
    s.opt_state['sparse']['user']['nu'][4],
  )
  jax.tree.map(np.testing.assert_array_equal, user(got), user(once))
  assert not np.allclose(
    want.params['embed']['user'][4], once.params['embed']['user'][4]
  )


# The architectures that differ for sparse updates: per-task tables
# [T, V, d] (single_task), tasks sharing only the embeddings (ESMM: a
# gradient-space method's Gram matrix; AITM: GradNorm's norm at embed/table,
# both from the sparse table's per-task rows), and a shared backbone (MMoE,
# with PCGrad and clipping, whose global norm counts the sparse rows).
CASES = {
  'single_task': ('equal', 0.0),
  'esmm': ('mgda', 0.0),
  'aitm': ('gradnorm', 0.0),
  'mmoe': ('pcgrad', 0.01),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_architectures_and_methods_sparse_adagrad_equals_dense(name):
  method, clip = CASES[name]
  model = _model(name)
  rng = np.random.default_rng(2)
  batches = [_fit(_batch(rng, PLAIN, skip=(6,)), model) for _ in range(2)]
  w = _weighting(method)
  sparse = {'tables': ('table',), 'method': 'adagrad'}
  kw = dict(grad_clip_norm=clip)
  _, want = _run(model, _tx('adagrad', model, **kw), w, batches)
  init, got = _run(
    model, _tx('adagrad', model, sparse=sparse, **kw), w, batches
  )
  _close(got.params, want.params)
  _close(got.weighting_state, want.weighting_state)
  # Row 11 (column 1's id 6) is never looked up: bit for bit as initialised.
  table = got.params['embed']['table']
  np.testing.assert_array_equal(
    table[..., 11, :], init['embed']['table'][..., 11, :]
  )
  acc = got.opt_state['sparse']['table']['acc'][..., 11, :]
  np.testing.assert_array_equal(acc, np.full_like(acc, 0.1))


@functools.cache
def _one_device_mmoe():
  """(batches, the one-device run of them): the oracle of both backends.
  16 rows a batch, as above, so its compiled step is MMoE's above."""
  model = _model()
  rng = np.random.default_rng(5)
  batches = [_batch(rng, PLAIN) for _ in range(2)]
  w = _weighting('pcgrad')
  sparse = {'tables': ('table',), 'method': 'adagrad'}
  tx = _tx('adagrad', model, sparse=sparse, grad_clip_norm=0.01)
  return batches, _run(model, tx, w, batches)[1]


@pytest.mark.parametrize('backend', parallel.BACKENDS)
def test_8_devices_equal_one(backend):
  """MMoE's case above (PCGrad, clipping): ids and rows all-gathered (16
  rows a batch: 2 a device)."""
  assert jax.device_count() == 8
  model = _model()
  w = _weighting('pcgrad')
  sparse = {'tables': ('table',), 'method': 'adagrad'}
  tx = _tx('adagrad', model, sparse=sparse, grad_clip_norm=0.01)
  batches, want = _one_device_mmoe()
  _, got = _run(model, tx, w, batches, axis='data', backend=backend)
  _close(got.params, want.params)
  _close(got.opt_state, want.opt_state)


def test_population_of_two_equals_two_runs():
  model = _model()
  rng = np.random.default_rng(6)
  batches = [_batch(rng, PLAIN) for _ in range(2)]
  w = _weighting('equal')
  tx = _tx('adam', model, sparse={'tables': ('table',)})
  keys = [jax.random.key(0), jax.random.key(1)]
  features = train_step.features_of(batches[0])
  states = population.init_population(
    model, tx, [w, w], features, num_tasks=2, init_keys=keys
  )
  step = train_step.make_train_step(
    model, tx, w, _tasks(model), steps_per_epoch=1
  )
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
    _close(population.member(states, k).params, single.params)


def test_bad_sparse_config_is_one_line():
  from configs import common
  from mtl.shell import validate

  config = common.base_config('mmoe', 'entire_space')
  config.optimizer.sparse.method = 'lazy'
  with pytest.raises(ConfigError) as e:
    validate.check_config(config)
  assert str(e.value).startswith("optimizer.sparse.method 'lazy' is not one")
  assert '\n' not in str(e.value)
  config = common.base_config('mmoe', 'entire_space')
  config.optimizer.sparse.min_rows = -1
  with pytest.raises(ConfigError, match=r'^optimizer.sparse.min_rows is -1'):
    validate.check_config(config)
  with pytest.raises(ConfigError, match=r"^optimizer.sparse.tables has 'u'"):
    _tx('adam', _model(), sparse={'tables': ('u',)})


def _trainer_config(num_epochs):
  from configs import common

  c = common.base_config('mmoe', 'entire_space')
  c.dataset.update(
    dict(n_train=512, n_validation=128, n_test=128, num_items=300, d=4)
  )
  c.model.update(dict(num_experts=2, expert_hidden=(4,)))
  c.embedding.dim = 2
  c.towers.hidden = (4,)
  c.batch_size, c.eval_batch_size, c.steps_per_dispatch = 64, 128, 4
  c.num_epochs = num_epochs
  c.optimizer.schedule = 'constant'
  c.optimizer.sparse.min_rows = 100  # The one table, 300 rows: lazy Adam.
  c.checkpoint.every_steps = 8
  c.checkpoint.async_save = False
  c.progress_bar = False
  c.diagnostics_every_steps = 0
  return c


def test_trainer_run_with_a_sparse_table_resumes_bit_identical(tmp_path):
  import orbax.checkpoint as ocp

  from mtl.shell import trainer

  def final(workdir):
    path = workdir / 'checkpoints' / str(2 * 8) / 'state'
    return ocp.StandardCheckpointer().restore(path)

  # 8 steps an epoch, a checkpoint every 8: the split run stops after one
  # epoch and its second run resumes from step 8.
  whole = trainer.train(_trainer_config(2), tmp_path / 'whole')
  trainer.train(_trainer_config(1), tmp_path / 'split')
  split = trainer.train(_trainer_config(2), tmp_path / 'split')
  assert split['test'] == whole['test']
  got, want = final(tmp_path / 'split'), final(tmp_path / 'whole')
  assert 'sparse' in str(jax.tree_util.tree_structure(want))
  jax.tree.map(np.testing.assert_array_equal, got, want)
