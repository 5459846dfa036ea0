"""UPGrad and Aligned-MTL against reference outputs of torchjd 0.18.0.

The fixtures were written by experiments/references/make_weighting_
fixtures.py (PyTorch, float64; its docstring has the command): torchjd's
weights for each case's Gram matrix, with its default preference (the mean
1/T, so mtl's coefficients at weights of one are T times them) or the
case's preference vector (mtl's task weights). Within 1e-5 relative plus
the float32 limits the methods' docstrings state (the float32 Gram's, and
Aligned-MTL's eigendecomposition's), from the float64 references of
test_upgrad.py and test_aligned_mtl.py.
"""

import functools
import json
import pathlib

import numpy as np
import pytest

from mtl.core.weighting.aligned_mtl import aligned_mtl
from mtl.core.weighting.upgrad import upgrad
from tests.core.weighting import test_aligned_mtl, test_upgrad
from tests.core.weighting.hard_cases import float32_limit, rel_err, run

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
RTOL = 1e-5
LIMIT_FACTOR = 4.0
METHODS = {'upgrad': upgrad, 'aligned_mtl': aligned_mtl}
REFERENCES = {
  'upgrad': lambda g, w: test_upgrad.reference(g, w=w),
  'aligned_mtl': test_aligned_mtl.reference,
}


@functools.cache
def fixture(name):
  return json.loads((FIXTURES / f'{name}.json').read_text())


@functools.cache
def method(name):
  return METHODS[name]()


@pytest.mark.parametrize('name', sorted(METHODS))
@pytest.mark.parametrize('case', range(11))
def test_matches_torchjd(name, case):
  row = fixture(name)['cases'][case]
  g = np.asarray(row['gradients'])
  t = len(g)
  pref = row['preference']
  want = np.asarray(row['weights']) * (t if pref is None else 1.0)
  w = np.ones(t) if pref is None else np.asarray(pref)
  c, d, _ = run(method(name), g, weights=w)
  # The float64 reference agrees with torchjd to float64 precision (QP
  # solver tolerance), so the float32 limits are the references'.
  reference = REFERENCES[name]
  assert rel_err(reference(g, w), want) < 1e-8
  limit_c, limit_d = 0.0, 0.0  # T = 10: well conditioned, 1e-5 flat
  if t <= 6:
    limit_c, limit_d = float32_limit(lambda x: reference(x, w), g)
  extra = test_aligned_mtl.eigh_limit(g) if name == 'aligned_mtl' else 0.0
  assert rel_err(c, want) < RTOL + LIMIT_FACTOR * limit_c + extra
  assert rel_err(d, want @ g) < RTOL + LIMIT_FACTOR * limit_d + extra
