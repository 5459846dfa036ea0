"""DBMTL (Wang, Ji, Liu, Zhao, arXiv 1902.09154) against a float64 numpy
forward pass of its layers, its dependency order (a task's output moves
with its ancestors' Bayesian-layer params and no others), the one-line
errors of a bad network, and 8 devices against one."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import smoke
from mtl.core.architectures import DBMTL
from mtl.errors import ConfigError
from mtl.shell import validate
from tests.core.architectures import data_parallel

FAST_COMPILE = {'xla_backend_optimization_level': 0}
B, D, T = 8, 5, 3
SIZES = dict(bottom_hidden=(6,), task_hidden=(5,), relation_hidden=(4,))


def random_params(module, x, seed=0):
  shapes = jax.eval_shape(
    functools.partial(module.init, train=False), jax.random.key(0), x
  )['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes
  )


def np_mlp(mlp, x, *index):
  x = np.asarray(x, np.float64)
  for i in range(len(mlp)):
    kernel = np.asarray(mlp[f'Dense_{i}']['kernel'], np.float64)[index]
    bias = np.asarray(mlp[f'Dense_{i}']['bias'], np.float64)[index]
    x = np.maximum(x @ kernel + bias, 0.0)
  return x


def np_dbmtl(params, x, parents, order):
  """h = MLP(x); s_t = MLP_t(h); f_t = MLP_rel_t([s_t, f_parents])."""
  h = np_mlp(params['bottom'], x)
  f = {}
  for t in order:
    s_t = np_mlp(params['specific']['mlp'], h, t)
    inputs = np.concatenate([s_t, *(f[p] for p in parents[t])], axis=-1)
    f[t] = np_mlp(params[f'relation_{t}'], inputs)
  return np.stack([f[t] for t in range(len(parents))])


@functools.cache
def _forward(dependencies):
  module = DBMTL(num_tasks=T, dependencies=dependencies, **SIZES)
  fn = jax.jit(
    lambda p, x: module.apply({'params': p}, x, train=False),
    compiler_options=FAST_COMPILE,
  )
  return module, fn


def _x():
  return np.random.default_rng(1).normal(size=(B, D)).astype(np.float32)


@pytest.mark.parametrize(
  ('dependencies', 'parents', 'order'),
  [
    (None, ((), (0,), (0, 1)), (0, 1, 2)),  # Bayes' chain rule.
    (((0, 2), (1, 2), (0, 1)), ((1, 2), (2,), ()), (2, 1, 0)),
  ],
)
def test_forward_against_numpy(dependencies, parents, order):
  module, fn = _forward(dependencies)
  x = _x()
  params = random_params(module, x)
  got = np.asarray(fn(params, x))
  want = np_dbmtl(params, x, parents, order)
  assert got.shape == (T, B, SIZES['relation_hidden'][-1])
  assert np.abs(want).max() > 0  # Not all ReLUs dead.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Each relation MLP reads s_t and its parents' outputs, nothing else.
  for t in range(T):
    width = params[f'relation_{t}']['Dense_0']['kernel'].shape[0]
    assert width == 5 + 4 * len(parents[t])


@pytest.mark.parametrize(
  ('dependencies', 'readers'),
  [
    (None, {0: {0, 1, 2}, 1: {1, 2}, 2: {2}}),
    (((2, 0),), {0: {0, 2}, 1: {1}, 2: {2}}),
    (((1, 2), (0, 1)), {0: {0}, 1: {0, 1}, 2: {0, 1, 2}}),
  ],
)
def test_output_moves_with_its_ancestors_params_only(dependencies, readers):
  """readers[p]: the tasks whose outputs change when task p's
  Bayesian-layer params change (p itself and its descendants)."""
  module, fn = _forward(dependencies)
  x = _x()
  params = random_params(module, x, seed=2)
  base = np.asarray(fn(params, x))
  for p in range(T):
    moved = jax.tree.map(
      lambda a: a + 0.5, params[f'relation_{p}']
    )  # Biases up: ReLUs come alive, outputs move.
    z = np.asarray(fn({**params, f'relation_{p}': moved}, x))
    changed = {t for t in range(T) if not np.array_equal(z[t], base[t])}
    assert changed == readers[p], (p, changed)


@pytest.mark.parametrize(
  ('dependencies', 'message'),
  [
    (
      ((0, 1), (1, 2), (2, 0)),
      'model.dependencies has a cycle among tasks [0, 1, 2], expected an '
      'acyclic network of targets',
    ),
    (((1, 0), (2, 1), (1, 2)), 'model.dependencies has a cycle among tasks'),
    (((3, 0),), 'model.dependencies has (3, 0), expected task indices in'),
    (((1, 1),), 'model.dependencies has (1, 1), expected a task other than'),
    (((1, 0, 2),), 'model.dependencies has (1, 0, 2), expected (task, par'),
  ],
)
def test_bad_networks_are_one_config_error_line(dependencies, message):
  with pytest.raises(ConfigError) as err:
    DBMTL(num_tasks=T, dependencies=dependencies)
  assert str(err.value).startswith(message), str(err.value)
  assert '\n' not in str(err.value)


def test_config_lists_become_tuples_and_validate_names_the_key():
  module = DBMTL(num_tasks=T, dependencies=[[1, 0], [2, 1]])
  assert module.dependencies == ((1, 0), (2, 1))
  hash(module.dependencies)
  values = smoke.get_config('mmoe').to_dict()
  values['model_name'] = 'dbmtl'
  values['model']['dependencies'] = ((1, -1),)
  with pytest.raises(ConfigError) as err:
    validate.check_config(ml_collections.ConfigDict(values))
  assert str(err.value) == 'model.dependencies[0][1] is -1, expected >= 0'


def test_8_devices_equal_one():
  data_parallel.assert_devices_equal_one(
    'dbmtl', dict(dependencies=((2, 0), (2, 1)), **SIZES)
  )
