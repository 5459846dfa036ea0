"""Pareto set and 2-D hypervolume against hand-computed answers."""

import itertools

import numpy as np
import pytest

from mtl.search import pareto


def test_non_dominated_by_hand():
  pts = [(1, 5), (2, 4), (2, 2), (3, 1), (0, 0), (3, 1), (1, 4)]
  # (2, 2) < (2, 4); (0, 0) < all; (1, 4) < (1, 5); duplicates both stay.
  assert pareto.non_dominated(pts).tolist() == [
    True,
    True,
    False,
    True,
    False,
    True,
    False,
  ]


def test_non_dominated_matches_brute_force():
  rng = np.random.default_rng(0)
  pts = rng.integers(0, 6, size=(40, 3))
  mask = pareto.non_dominated(pts)
  for i, a in enumerate(pts):
    dominated = any((b >= a).all() and (b > a).any() for b in pts)
    assert mask[i] == (not dominated)


def test_hypervolume_by_hand():
  # Staircase from (3,1), (2,4), (1,5) above (0,0):
  # 3*1 + 2*(4-1) + 1*(5-4) = 3 + 6 + 1 = 10.
  pts = [(1, 5), (2, 4), (3, 1), (2, 2), (0.5, 0.5)]
  assert pareto.hypervolume_2d(pts, (0, 0)) == pytest.approx(10.0)
  # A point below the reference adds nothing.
  assert pareto.hypervolume_2d(pts + [(-1, 9)], (0, 0)) == pytest.approx(10.0)
  assert pareto.hypervolume_2d([(1, 1)], (2, 2)) == 0.0


def test_hypervolume_matches_grid_count():
  rng = np.random.default_rng(1)
  pts = rng.integers(1, 20, size=(12, 2))
  cells = sum(
    any(x < px and y < py for px, py in pts)
    for x, y in itertools.product(range(20), range(20))
  )
  # Unit cells [x, x+1] x [y, y+1] fully dominated, reference (0, 0).
  assert pareto.hypervolume_2d(pts, (0, 0)) == pytest.approx(cells)


def test_bad_shapes():
  with pytest.raises(ValueError, match='expected'):
    pareto.hypervolume_2d([(1, 2, 3)], (0, 0))
