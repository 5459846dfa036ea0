"""Reference outputs of LibMTL 1.1.5's GLS and GradVac, as test fixtures.

Run in a separate environment with PyTorch and LibMTL (never by the tests,
which must not import torch):

  python3 -m venv .refenvB
  .refenvB/bin/pip install torch==2.13.0 numpy
  .refenvB/bin/pip install --no-deps LibMTL-1.1.5-py3-none-any.whl
  .refenvB/bin/python \
    experiments/references/make_loss_weighting_fixtures.py

It writes tests/core/weighting/fixtures/{gls,gradvac}.json, read by
tests/core/weighting/test_libmtl_fixtures.py. LibMTL 1.1.5 has no STCH or FAMO
(later LibMTL versions do); those are checked against float64 references
only.

- gls.json: for each loss vector, the gradient of GLS's loss with respect to
  the losses (the weights LibMTL's backward actually applies) and the weights
  `GLS.backward` returns for logging.
- gradvac.json: two tasks (so LibMTL's random order of the other tasks
  does not matter) whose gradients' cosine falls from step to step, so every
  pair is vaccinated at every step and LibMTL's target update (only when
  vaccinating) coincides with Algorithm 1's (every visited pair); for each of
  20 steps the gradients, LibMTL's coefficients of the original gradients
  (`batch_weight`), the combined gradient and the targets rho_T after it.

LibMTL computes in float64 here (torch's default dtype set to float64).
"""

import importlib.util
import json
import pathlib
import sys
import types

import numpy as np
import torch

OUT = pathlib.Path(__file__).resolve().parents[2] / 'tests/core/weighting'
OUT = OUT / 'fixtures'


def import_libmtl_weighting():
  """LibMTL's weighting modules without LibMTL/__init__.py, which imports
  its models and so torchvision."""
  root = pathlib.Path(importlib.util.find_spec('LibMTL').origin).parent
  for name, path in (
    ('LibMTL', root),
    ('LibMTL.weighting', root / 'weighting'),
  ):
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module
  from LibMTL.weighting.GLS import GLS  # noqa: PLC0415
  from LibMTL.weighting.GradVac import GradVac  # noqa: PLC0415

  return GLS, GradVac


GLS_CASES = [
  [0.5, 0.5],
  [0.7, 0.2],
  [0.01, 1.0],
  [1e-3, 10.0],
  [0.7, 0.2, 1.3],
  [0.31, 0.05, 2.4, 0.9, 0.66],
  list(np.logspace(-2, 2, 6)),
  list(1e-4 * np.arange(1, 9)),
  [50.0, 200.0, 75.0],
  [0.5, 0.5000001],
]


def gls_fixture(gls_class):
  cases = []
  for losses in GLS_CASES:
    method = gls_class()
    method.task_num = len(losses)
    x = torch.tensor(losses, requires_grad=True)
    logged = method.backward(x)
    cases.append(
      {
        'losses': list(map(float, losses)),
        'gradient': x.grad.tolist(),
        'logged_weights': np.asarray(logged, np.float64).tolist(),
      }
    )
  return {'source': 'LibMTL 1.1.5 GLS.backward', 'cases': cases}


def gradvac_harness(gradvac_class, num_params):
  class Harness(gradvac_class):
    """GradVac on one shared parameter vector theta, with the loss of task
    t = <g_t, theta>, so that its gradient is exactly g_t."""

    def __init__(self):
      super().__init__()
      self.task_num, self.device, self.rep_grad = 2, 'cpu', False
      self.theta = torch.nn.Parameter(torch.zeros(num_params))

    def get_share_params(self):
      return [self.theta]

    def zero_grad_share_params(self):
      self.theta.grad.zero_()

    def step(self, g, beta):
      self.theta.grad = None  # the trainer's optimizer.zero_grad()
      losses = torch.as_tensor(g) @ self.theta
      coefficients = self.backward(losses, beta=beta)
      return coefficients, self.theta.grad.detach().clone()

  return Harness()


def conflicting_pair(rng, p, cos, scale):
  """Two gradients at the given cosine, norms 1 and `scale`."""
  a = rng.normal(size=p)
  b = rng.normal(size=p)
  b -= (b @ a) / (a @ a) * a
  a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
  g2 = cos * a + np.sqrt(1 - cos**2) * b
  return np.stack([a, scale * g2])


GRADVAC_CASES = [  # (name, cosines from high to low, scale of g_2, beta, seed)
  ('opposed', (-0.99, -0.9), 1.0, 0.01, 0),
  ('opposed_beta_half', (-0.99, -0.9), 1.0, 0.5, 1),
  ('conflicting', (-0.7, -0.5), 1.0, 0.01, 2),
  ('conflicting_beta_half', (-0.7, -0.5), 1.0, 0.5, 3),
  ('scaled_100x', (-0.8, -0.4), 100.0, 0.01, 4),
  ('scaled_100x_beta_half', (-0.8, -0.4), 100.0, 0.5, 5),
  ('tiny_scale', (-0.9, -0.3), 0.01, 0.1, 6),
  ('nearly_opposite', (-0.999, -0.99), 3.0, 0.01, 7),
  ('mild', (-0.3, -0.2), 1.0, 0.01, 8),
  ('mild_beta_half', (-0.3, -0.2), 2.0, 0.5, 9),
]


def gradvac_fixture(gradvac_class, steps=20, p=8):
  cases = []
  for name, (low, high), scale, beta, seed in GRADVAC_CASES:
    rng = np.random.default_rng(seed)
    method = gradvac_harness(gradvac_class, p)
    rows = []
    # Falling cosines: each is below every earlier one, so below the
    # targets (averages of earlier cosines and the initial 0).
    for cos in np.linspace(high, low, steps):
      g = conflicting_pair(rng, p, cos, scale)
      coefficients, combined = method.step(g, beta)
      rows.append(
        {
          'gradients': g.tolist(),
          'coefficients': np.asarray(coefficients, np.float64).tolist(),
          'combined': combined.tolist(),
          'targets': method.rho_T.tolist(),
        }
      )
    cases.append({'name': name, 'beta': beta, 'steps': rows})
  return {'source': 'LibMTL 1.1.5 GradVac.backward', 'cases': cases}


def main():
  torch.set_default_dtype(torch.float64)
  gls_class, gradvac_class = import_libmtl_weighting()
  OUT.mkdir(parents=True, exist_ok=True)
  for name, fixture in (
    ('gls', gls_fixture(gls_class)),
    ('gradvac', gradvac_fixture(gradvac_class)),
  ):
    path = OUT / f'{name}.json'
    path.write_text(json.dumps(fixture, indent=1) + '\n')
    print(f'wrote {path}')


if __name__ == '__main__':
  main()
