"""Reference outputs of torchjd's UPGrad and AlignedMTL, as test fixtures.

Run in a separate environment with PyTorch and torchjd (never by the tests,
which must not import torch):

  python3 -m venv .refenv
  .refenv/bin/pip install torch==2.13.0 numpy scipy torchjd==0.18.0 \
    qpsolvers quadprog
  .refenv/bin/python experiments/references/make_weighting_fixtures.py

It writes tests/core/weighting/fixtures/{upgrad,aligned_mtl}.json, read by
tests/core/weighting/test_torchjd_fixtures.py: for each case the gradients g
[T, P], the preference vector (None: torchjd's default, the mean 1/T) and
the weights torchjd's UPGradWeighting (quadprog, norm_eps = reg_eps = 1e-4)
or AlignedMTLWeighting (scale_mode 'min', the paper's) returns for the Gram
matrix g g^T, computed in float64. LibMTL 1.1.5 has neither method.
The cases keep every kept eigenvalue far from AlignedMTL's rank cutoff,
which torchjd 0.18 takes at the float64 epsilon here and mtl (like the
released code in float32 training) at float32's.
"""

import json
import pathlib

import numpy as np
import torch
from torchjd.aggregation import AlignedMTLWeighting, UPGradWeighting

OUT = pathlib.Path(__file__).resolve().parents[2] / 'tests/core/weighting'
OUT = OUT / 'fixtures'


def opposed(rng, t, p=8, cos=-0.999):
  g = rng.normal(size=(t, p))
  u = g[0] / np.linalg.norm(g[0])
  n = g[1] - (g[1] @ u) * u
  g[0] = u
  g[1] = 3.0 * (cos * u + np.sqrt(1 - cos**2) * n / np.linalg.norm(n))
  return g


def scaled(rng, t, p=8):
  return rng.normal(size=(t, p)) * np.logspace(0, 2, t)[:, None]


def nearly_parallel(rng, t, p=8, spread=3e-2):
  base = rng.normal(size=p)
  g = base + spread * np.linalg.norm(base) * rng.normal(size=(t, p)) / 3
  return g * rng.uniform(0.5, 2.0, size=(t, 1))


def cases():
  rng = np.random.default_rng(2024)
  out = [
    ('opposed2', opposed(rng, 2), None),
    ('opposed3', opposed(rng, 3), None),
    ('opposed5', opposed(rng, 5, cos=-0.99), None),
    ('scaled3', scaled(rng, 3), None),
    ('scaled5', scaled(rng, 5), None),
    ('parallel5', nearly_parallel(rng, 5), None),
    ('random4', rng.normal(size=(4, 8)), None),
    ('random6', rng.normal(size=(6, 8)), None),
    ('random10', rng.normal(size=(10, 12)), None),
    ('preference', scaled(rng, 3), [0.5, 2.0, 1.0]),
    ('preference_opposed', opposed(rng, 4, cos=-0.99), [1.0, 0.2, 3.0, 1.0]),
  ]
  return out


def fixture(weighting_class, source):
  rows = []
  for name, g, pref in cases():
    gram = torch.as_tensor(g @ g.T)
    kwargs = {} if pref is None else {'pref_vector': torch.as_tensor(pref)}
    weights = weighting_class(**kwargs)(gram)
    rows.append(
      {
        'name': name,
        'gradients': g.tolist(),
        'preference': pref,
        'weights': weights.tolist(),
      }
    )
  return {'source': source, 'cases': rows}


def main():
  torch.set_default_dtype(torch.float64)
  OUT.mkdir(parents=True, exist_ok=True)
  for name, fix in (
    ('upgrad', fixture(UPGradWeighting, 'torchjd 0.18.0 UPGradWeighting')),
    (
      'aligned_mtl',
      fixture(AlignedMTLWeighting, 'torchjd 0.18.0 AlignedMTLWeighting'),
    ),
  ):
    path = OUT / f'{name}.json'
    path.write_text(json.dumps(fix, indent=1) + '\n')
    print(f'wrote {path}')


if __name__ == '__main__':
  main()
