"""Reference outputs of LibMTL 1.1.5's gradient methods, as test fixtures.

Run in a separate environment with PyTorch, SciPy and LibMTL (never by the
tests, which must not import torch):

  python3 -m venv .refenvC
  .refenvC/bin/pip install torch==2.13.0 numpy scipy
  .refenvC/bin/pip download LibMTL==1.1.5 --no-deps -d .refenvC
  .refenvC/bin/pip install --no-deps .refenvC/LibMTL-1.1.5-*.whl
  .refenvC/bin/python \
    experiments/references/make_libmtl_gradient_fixtures.py

It writes tests/core/weighting/fixtures/{pcgrad,mgda,imtl,cagrad,dwa,
graddrop}.json, read by tests/core/weighting/test_libmtl_gradient_
fixtures.py. LibMTL 1.1.5's weighting modules are EW, GLS, GradNorm, GradVac,
MGDA, UW, DWA, GradDrop, PCGrad, IMTL, CAGrad and RLW; it has no DB-MTL,
MoCo, FairGrad, ExcessMTL, MoDo, SDMGrad or Nash-MTL (later LibMTL versions
do). GLS and GradVac: make_loss_weighting_fixtures.py.

Each method's `backward` is driven as LibMTL's trainer drives it, on one
shared parameter vector theta with the loss of task t L_t = <g_t, theta> +
l_t (theta = 0), so that its gradient is exactly g_t and its value l_t;
every case records the gradients, the losses, what the method returns and
the gradient it leaves on theta (the combined gradient the optimizer
applies). LibMTL computes in float64 here (torch's default dtype float64).

- PCGrad: two tasks (LibMTL shuffles the order of the other tasks with
  Python's `random`; with two the order does not matter).
- MGDA: mgda_gn 'none' (LibMTL's default), plus 'l2' and 'loss' cases
  (LibMTL applies the solution to the normalised gradients).
- IMTL: LibMTL's IMTL is IMTL-L and IMTL-G together; at its initial loss
  scales (s = 0: exp(s) L - s = L) the gradients are the g_t and the
  shared gradient is IMTL-G's.
- CAGrad: three tasks only: LibMTL 1.1.5's objective reshapes the weights
  to (1, 3) (`x.reshape(1,3)`), so it raises for any other task count
  (recorded in the fixture).
- DWA: 20 epochs of 3 equal-sized batches each; LibMTL's trainer puts each
  epoch's mean batch loss into `train_loss_buffer` after the epoch.
- GradDrop: LibMTL supports only rep_grad=True, so theta is the shared
  representation itself (one row, positive, so the signs of the inputs are
  +1 and the sign-corrected gradients are the g_t); the uniforms LibMTL
  draws (`torch.rand_like`) are recorded with the purity P it computed.
"""

import importlib.util
import json
import pathlib
import random
import sys
import types

import numpy as np
import torch

OUT = pathlib.Path(__file__).resolve().parents[2] / 'tests/core/weighting'
OUT = OUT / 'fixtures'
SOURCE = 'LibMTL 1.1.5 {}.backward (torch float64)'


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
  from LibMTL.weighting.CAGrad import CAGrad  # noqa: PLC0415
  from LibMTL.weighting.DWA import DWA  # noqa: PLC0415
  from LibMTL.weighting.GradDrop import GradDrop  # noqa: PLC0415
  from LibMTL.weighting.IMTL import IMTL  # noqa: PLC0415
  from LibMTL.weighting.MGDA import MGDA  # noqa: PLC0415
  from LibMTL.weighting.PCGrad import PCGrad  # noqa: PLC0415

  return {
    'pcgrad': PCGrad,
    'mgda': MGDA,
    'imtl': IMTL,
    'cagrad': CAGrad,
    'dwa': DWA,
    'graddrop': GradDrop,
  }


def harness(weighting_class, num_tasks, num_params):
  class Harness(weighting_class):
    """The method on one shared parameter vector theta (rep_grad=False)."""

    def __init__(self):
      super().__init__()
      self.task_num, self.device, self.rep_grad = num_tasks, 'cpu', False
      self.theta = torch.nn.Parameter(torch.zeros(num_params))
      self.init_param()

    def get_share_params(self):
      return [self.theta]

    def zero_grad_share_params(self):
      self.theta.grad.zero_()

    def step(self, g, losses, **kwargs):
      self.theta.grad = None  # the trainer's optimizer.zero_grad()
      values = torch.as_tensor(g) @ self.theta + torch.as_tensor(losses)
      returned = self.backward(values, **kwargs)
      if returned is not None:
        returned = np.asarray(returned, np.float64).tolist()
      return returned, self.theta.grad.detach().clone().tolist()

  return Harness()


# The gradient sets of tests/core/weighting/hard_cases.py (copied: this
# script runs without jax), float64.


def opposed(rng, t=2, p=8, cos=-0.999):
  """g_1 and g_2 at cosine `cos`, norms 1 and 3; the others random."""
  g = rng.normal(size=(t, p))
  u = g[0] / np.linalg.norm(g[0])
  n = g[1] - (g[1] @ u) * u
  g[0] = u
  g[1] = 3.0 * (cos * u + np.sqrt(1 - cos**2) * n / np.linalg.norm(n))
  return g


def scaled(rng, t=3, p=8):
  """Norms spread over 100-fold."""
  return rng.normal(size=(t, p)) * np.logspace(0, 2, t)[:, None]


def nearly_parallel(rng, t=5, p=8, spread=3e-3):
  """cos >= ~1 - spread^2, norms 0.5 to 2."""
  base = rng.normal(size=p)
  noise = rng.normal(size=(t, p)) / np.sqrt(p)
  g = base + spread * np.linalg.norm(base) * noise
  return g * rng.uniform(0.5, 2.0, size=(t, 1))


def opposed_scaled(rng, t=4, p=8):
  """Opposed pair inside 100-fold scales, shuffled."""
  g = opposed(rng, t, p, cos=-0.99)
  return g * np.logspace(0, 2, t)[rng.permutation(t)][:, None]


def pair(rng, cos, scale, p=8):
  """Two gradients at the given cosine, norms 1 and `scale`."""
  a, b = rng.normal(size=p), rng.normal(size=p)
  b -= (b @ a) / (a @ a) * a
  a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
  return np.stack([a, scale * (cos * a + np.sqrt(1 - cos**2) * b)])


HARD_SETS = {
  'opposed2': lambda r: opposed(r, 2),
  'opposed3': lambda r: opposed(r, 3),
  'opposed5': lambda r: opposed(r, 5, cos=-0.99),
  'scaled3': lambda r: scaled(r, 3),
  'scaled5': lambda r: scaled(r, 5),
  'opposed_scaled4': lambda r: opposed_scaled(r, 4),
  'opposed_scaled6': lambda r: opposed_scaled(r, 6),
  'parallel5': lambda r: nearly_parallel(r, 5),
  'parallel6_close': lambda r: nearly_parallel(r, 6, spread=1e-3),
  'random6': lambda r: r.normal(size=(6, 8)),
  'random10': lambda r: r.normal(size=(10, 12)),
}

TWO_TASK_SETS = {  # (cosine, scale of g_2)
  'opposed': (-0.999, 3.0),
  'conflicting': (-0.5, 1.0),
  'mild': (-0.1, 1.0),
  'orthogonal': (0.0, 2.0),
  'agreeing': (0.6, 1.0),
  'nearly_parallel': (0.99999, 1.5),
  'scaled_100x_opposed': (-0.9, 100.0),
  'scaled_100x_conflicting': (-0.3, 100.0),
  'tiny_scale': (-0.7, 0.01),
  'nearly_opposite': (-0.999999, 1.0),
  'shorter_dominates': (0.9, 5.0),  # <g1, g2> > ||g1||^2: a vertex
}


def two_task_cases():
  out = []
  for seed, (name, (cos, scale)) in enumerate(TWO_TASK_SETS.items()):
    g = pair(np.random.default_rng(seed), cos, scale)
    out.append((name, g))
  return out


def hard_cases(seeds=(0, 1)):
  return [
    (f'{name}_seed{seed}', make(np.random.default_rng(seed)))
    for name, make in HARD_SETS.items()
    for seed in seeds
  ]


def pcgrad_fixture(cls):
  cases = []
  for name, g in two_task_cases():
    returned, combined = harness(cls, 2, g.shape[1]).step(g, np.ones(2))
    cases.append(
      {
        'name': name,
        'gradients': g.tolist(),
        'coefficients': returned,  # LibMTL's batch_weight
        'combined': combined,
      }
    )
  return {'source': SOURCE.format('PCGrad'), 'cases': cases}


def mgda_fixture(cls):
  cases = []
  runs = [(n, g, 'none') for n, g in two_task_cases()]
  runs += [(n, g, 'none') for n, g in hard_cases()]
  runs += [
    (n, g, gn)
    for n, g in hard_cases(seeds=(0,))
    if n.startswith(('opposed3', 'scaled5', 'parallel5'))
    for gn in ('l2', 'loss')
  ]
  for name, g, gn in runs:
    t = len(g)
    losses = np.linspace(0.5, 2.0, t)
    method = harness(cls, t, g.shape[1])
    row = {'name': name, 'mgda_gn': gn, 'gradients': g.tolist()}
    row['losses'] = losses.tolist()
    returned, combined = method.step(g, losses, mgda_gn=gn)
    row.update(weights=returned, combined=combined)
    cases.append(row)
  return {'source': SOURCE.format('MGDA'), 'cases': cases}


def imtl_fixture(cls):
  cases = []
  runs = two_task_cases() + hard_cases()
  for name, g in runs:
    t = len(g)
    method = harness(cls, t, g.shape[1])
    returned, combined = method.step(g, np.ones(t))
    cases.append(
      {
        'name': name,
        'gradients': g.tolist(),
        'alpha': returned,
        'combined': combined,
      }
    )
  return {'source': SOURCE.format('IMTL'), 'cases': cases}


def cagrad_runs():
  three = [
    (n, g) for n, g in hard_cases(seeds=(0, 1, 2)) if n.startswith('opposed3')
  ]
  three += [
    (n, g) for n, g in hard_cases(seeds=(0, 1, 2)) if n.startswith('scaled3')
  ]
  rng = np.random.default_rng(11)
  three += [
    ('parallel3', nearly_parallel(rng, 3)),
    ('parallel3_close', nearly_parallel(rng, 3, spread=1e-3)),
    ('opposed_scaled3', opposed_scaled(rng, 3)),
    ('random3_a', rng.normal(size=(3, 8))),
    ('random3_b', rng.normal(size=(3, 8))),
  ]
  out = [(n, g, 0.5, 1) for n, g in three]  # LibMTL's defaults
  out += [(n, g, 0.4, 1) for n, g in three[:4]]  # mtl's default c
  out += [(n, g, 0.5, r) for n, g in three[6:8] for r in (0, 2)]
  out += [(n, g, 0.5, 1) for n, g in hard_cases(seeds=(0,)) if len(g) != 3][:2]
  return out


def cagrad_fixture(cls):
  cases = []
  for name, g, calpha, rescale in cagrad_runs():
    t = len(g)
    row = {'name': name, 'calpha': calpha, 'rescale': rescale}
    row['gradients'] = g.tolist()
    method = harness(cls, t, g.shape[1])
    try:
      returned, combined = method.step(
        g, np.ones(t), calpha=calpha, rescale=rescale
      )
    except ValueError as e:  # `x.reshape(1,3)`: three tasks only.
      returned, combined = None, None
      row['error'] = f'{type(e).__name__}: {e}'
    row.update(w=returned, combined=combined)
    cases.append(row)
  return {'source': SOURCE.format('CAGrad'), 'cases': cases}


def dwa_trajectories():
  """(name, gradients [T, P], losses [epochs, batches, T])."""
  rng = np.random.default_rng(3)
  e = np.arange(20)[:, None, None] + np.arange(3)[None, :, None] / 3

  def noisy(base, size=0.05):
    return base * np.exp(size * rng.normal(size=base.shape))

  out = [
    ('decay_two_rates', np.exp(-np.array([0.05, 0.2]) * e)),
    ('decay_three_rates', np.exp(-np.array([0.01, 0.1, 0.3]) * e)),
    ('noisy_three', noisy(np.exp(-np.array([0.02, 0.05, 0.1]) * e))),
    (
      'scaled_1e3',
      np.array([1e-3, 1.0, 1e3]) * np.exp(-np.array([0.05, 0.1, 0.2]) * e),
    ),
    (
      'five_tasks',
      noisy(np.exp(-np.array([0.0, 0.05, 0.1, 0.2, 0.4]) * e), 0.1),
    ),
    ('rising', np.array([1.0, 2.0]) * np.exp(np.array([0.1, -0.1]) * e)),
    ('plateau_then_drop', 1.0 + (e > 8) * np.array([0.0, -0.5])),
    ('sharp_ratios', np.exp(-np.array([0.0, 2.0, 4.0]) * np.sqrt(e + 1))),
    ('oscillating', 1.5 + np.sin(np.array([0.5, 1.3]) * e)),
    ('six_noisy', noisy(np.ones((20, 3, 6)), 0.3)),
  ]
  cases = []
  for name, losses in out:
    losses = np.broadcast_to(losses, (20, 3, losses.shape[-1])).copy()
    cases.append((name, rng.normal(size=(losses.shape[-1], 8)), losses))
  return cases


def dwa_fixture(cls, temperature=2.0):
  cases = []
  for name, g, losses in dwa_trajectories():
    epochs, batches, t = losses.shape
    method = harness(cls, t, g.shape[1])
    method.train_loss_buffer = np.zeros([t, epochs])
    rows = []
    for epoch in range(epochs):
      method.epoch = epoch
      for batch in range(batches):
        returned, combined = method.step(g, losses[epoch, batch], T=temperature)
        rows.append({'weights': returned, 'combined': combined})
      # Equal batch sizes: the meter's loss_item is the batches' mean.
      method.train_loss_buffer[:, epoch] = losses[epoch].mean(0)
    cases.append(
      {
        'name': name,
        'T': temperature,
        'batches_per_epoch': batches,
        'gradients': g.tolist(),
        'losses': losses.reshape(-1, t).tolist(),
        'steps': rows,
      }
    )
  return {'source': SOURCE.format('DWA'), 'cases': cases}


def graddrop_harness(cls, num_tasks, num_params):
  class Harness(cls):
    """GradDrop on a shared representation theta [1, P] > 0 (rep_grad)."""

    def __init__(self):
      super().__init__()
      self.task_num, self.device, self.rep_grad = num_tasks, 'cpu', True
      self.task_name = [f'task{t}' for t in range(num_tasks)]
      self.theta = torch.nn.Parameter(torch.ones(1, num_params))

    def step(self, g, leak):
      self.theta.grad = None
      self.rep = self.theta * 1.0  # the encoder's output, batch of one
      self.rep_tasks = {
        name: self.rep.detach().clone().requires_grad_(True)
        for name in self.task_name
      }
      losses = torch.stack(
        [
          (torch.as_tensor(g[t]) * self.rep_tasks[name][0]).sum()
          for t, name in enumerate(self.task_name)
        ]
      )
      draws = []
      rand_like = torch.rand_like

      def recording(x, *args, **kwargs):
        u = rand_like(x, *args, **kwargs)
        draws.append(u.detach().clone())
        return u

      torch.rand_like = recording
      try:
        self.backward(losses, leak=leak)
      finally:
        torch.rand_like = rand_like
      (u,) = draws
      return u, self.theta.grad[0].detach().clone()

  return Harness()


GRADDROP_P = 64


def with_zeros(rng, t=4, p=GRADDROP_P):
  """Entries zero in some tasks, and some elements zero in every task."""
  g = rng.normal(size=(t, p))
  g[rng.random((t, p)) < 0.4] = 0.0
  g[:, :5] = 0.0
  return g


def graddrop_sets():
  p = GRADDROP_P
  sets = {
    'opposed2': lambda r: opposed(r, 2, p),
    'opposed3': lambda r: opposed(r, 3, p),
    'opposed5': lambda r: opposed(r, 5, p, cos=-0.99),
    'scaled3': lambda r: scaled(r, 3, p),
    'scaled5': lambda r: scaled(r, 5, p),
    'opposed_scaled6': lambda r: opposed_scaled(r, 6, p),
    'parallel5': lambda r: nearly_parallel(r, 5, p),
    'parallel6_close': lambda r: nearly_parallel(r, 6, p, 1e-3),
    'random10': lambda r: r.normal(size=(10, p)),
    'zero_entries': with_zeros,
  }
  return [(n, make(np.random.default_rng(5))) for n, make in sets.items()]


def graddrop_fixture(cls, steps=3):
  torch.manual_seed(0)
  cases = []
  for leak in (0.0, 0.3):
    for name, g in graddrop_sets():
      method = graddrop_harness(cls, len(g), g.shape[1])
      rows = []
      for _ in range(steps):
        u, combined = method.step(g, leak)
        rows.append({'uniforms': u.tolist(), 'combined': combined.tolist()})
      cases.append(
        {'name': name, 'leak': leak, 'gradients': g.tolist(), 'steps': rows}
      )
  return {'source': SOURCE.format('GradDrop'), 'cases': cases}


def main():
  torch.set_default_dtype(torch.float64)
  random.seed(0)
  classes = import_libmtl_weighting()
  makers = {
    'pcgrad': pcgrad_fixture,
    'mgda': mgda_fixture,
    'imtl': imtl_fixture,
    'cagrad': cagrad_fixture,
    'dwa': dwa_fixture,
    'graddrop': graddrop_fixture,
  }
  OUT.mkdir(parents=True, exist_ok=True)
  for name, make in makers.items():
    path = OUT / f'{name}.json'
    path.write_text(json.dumps(make(classes[name]), indent=1) + '\n')
    print(f'wrote {path}')


if __name__ == '__main__':
  main()
