"""The evolution strategy on functions with known optima."""

import numpy as np
import pytest

from mtl.search import evolution


def test_weights_of_is_a_positive_vector_summing_to_t():
  w = evolution.weights_of(np.array([[0.0, 0.0], [np.log(3.0), 0.0]]))
  np.testing.assert_allclose(w, [[1.0, 1.0], [1.5, 0.5]])
  w = evolution.weights_of(np.array([500.0, -500.0, 0.0]))
  assert np.isfinite(w).all() and w.sum() == pytest.approx(3.0)


def run(f, dim, generations, seed=0, popsize=6, mean=None):
  es = evolution.EvolutionStrategy(dim, popsize, sigma=0.5, seed=seed)
  state = es.init(mean)
  for _ in range(generations):
    x = es.ask(state)
    state = es.tell(state, x, [f(v) for v in x])
  return state


def test_finds_the_maximum_of_a_sphere():
  target = np.array([1.2, -0.7])
  state = run(lambda x: -np.sum((x - target) ** 2), 2, 60)
  np.testing.assert_allclose(state.mean, target, atol=1e-3)
  assert state.sigma < 0.05  # the step size shrank near the optimum


def test_step_size_grows_on_a_linear_function():
  state = run(lambda x: x[0], 3, 20)
  assert state.sigma > 2.0  # cumulative step-size adaptation at work
  assert state.mean[0] > 5.0


def test_deterministic_in_seed():
  f = lambda x: -np.sum(x**2)  # noqa: E731
  a, b = run(f, 2, 5, seed=3, mean=[1, 1]), run(f, 2, 5, seed=3, mean=[1, 1])
  np.testing.assert_array_equal(a.mean, b.mean)
  assert a.sigma == b.sigma


def test_bad_arguments():
  with pytest.raises(ValueError, match='popsize >= 2'):
    evolution.EvolutionStrategy(2, 1)
  es = evolution.EvolutionStrategy(2, 4)
  state = es.init()
  x = es.ask(state)
  with pytest.raises(ValueError, match='expected 4 finite numbers'):
    es.tell(state, x, [1.0, np.nan, 0.0, 0.0])
