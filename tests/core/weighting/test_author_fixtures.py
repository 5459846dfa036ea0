"""DB-MTL, MoCo, FairGrad, ExcessMTL, MoDo, SDMGrad and Nash-MTL against
reference outputs of their authors' code.

The fixtures (fixtures/<method>_authors.json) were written by
experiments/references/make_author_fixtures.py (PyTorch, float64; its
docstring has the command), which holds the authors' code verbatim with its
repository, path and commit (each fixture's `source` names them): LibMTL's
GitHub code for DB-MTL (its authors' own), MoCo (built on the MoCo
authors' code), MoDo and SDMGrad (no LibMTL release on the package registry
after 1.1.5 has them); the papers' repositories for MoCo (heshandevaka/MoCo,
Algorithm 1), FairGrad (OptMN-Lab/fairgrad), ExcessMTL (yifei-he/ExcessMTL),
SDMGrad (OptMN-Lab/sdmgrad) and Nash-MTL (AvivNavon/nash-mtl). Each ran on a
shared vector theta whose per-task gradients are the case's g_t (every
gradient a float32 number, so mtl sees exactly what the authors' code saw);
stateful methods over 20 steps, a new draw of the case's gradient set at each
step. mtl runs as the train step runs it: float32, `task_grads` or
`task_grads_parts` for the vector methods, the float32 Gram matrix
(`hard_cases.run`) for FairGrad and Nash-MTL, its state carried from step to
step.

Within 1e-5 relative (RTOL), plus the float32 limits the methods' docstrings
state: FairGrad and Nash-MTL LIMIT_FACTOR times the change of the exact
answer when the Gram's entries move by one float32 ulp
(`hard_cases.float32_limit`, as test_fairgrad and test_paper_references);
MoDo the float32 rounding of lambda's step (`modo_limit`); SDMGrad
LIMIT_FACTOR times the authors' own change of d when the samples move by one
float32 ulp (recorded in the fixture: the inner iteration at lr 5 or 10 is
expansive on some sets). Known differences, asserted exactly:

- Input mappings (no difference of method): LibMTL's MoCo is mtl's
  variant='code'; the MoCo authors' Tracking is Algorithm 1, mtl's
  variant='paper' with gamma = 2 delta (its step is delta 2 Y^T Y lambda) and
  rho = 0. DB-MTL's reported weights: LibMTL returns ones, mtl the weights
  of the log losses 1 / (L_t + 1e-8) (documented); LibMTL adds 1e-8 to the
  norms in alpha (1e-8 relative here). OptMN-Lab's SDMGrad divides the
  Gram by (mean sqrt(diag + 1e-4))^2 and steps at lr 10; mtl follows
  LibMTL's normalisation, so it runs with normalise=False, lr=10 on the
  samples xi, xi' divided by that scale. Nash-MTL's max_norm (its clipping
  of the combined gradient to norm 1, a trainer's choice) is off.
- ExcessMTL, a task whose gradient is zero at step 1: the authors' code
  divides 0 by its first estimate 0 and every weight is NaN from step 2 on;
  mtl gives that task r_t = 0 (documented) and stays finite. At step 1 the
  authors' code only records the estimates (weights 1); mtl updates with
  r_t = 1 for every task, so its weights stay 1 except there, where that
  task's r_t = 0 moves them (T softmax(eta [r_t])).
- SDMGrad: where the authors' own d moves by more than ILL_POSED under one
  ulp, no float32 (or float64) result can follow it; from that step on a
  trajectory is not compared, and these trajectories are exactly
  SDMGRAD_ILL_POSED.
- FairGrad: SciPy's least_squares (default tolerances) stops off the
  solution of G w = w^{-1/alpha} on some sets at alpha = 5
  (FAIRGRAD_STOPPED): there mtl must equal the exact float64 solution
  (test_fairgrad's reference). A zero gradient: the authors' w_t is
  arbitrary (any w_t solves its row), mtl's 0.
- Nash-MTL: its cvxpy sequence of convex problems does not always reach
  the solution of G alpha = 1 / alpha: it stops short (20 iterations, or
  alpha moving by < 1e-6: `stopped`), its iterations settle where a
  constraint alpha_t (G alpha)_t >= 1 is slack (strongly scaled or
  conflicting gradients: `slack`, far above 1), or ECOS fails
  and the previous alpha is kept (`kept`, ones at a cold start). Wherever
  the authors' alpha or d is more than NASH_SOLVED (RTOL / 10) off the
  exact solution (test_paper_references.nash_reference) mtl must equal the
  exact solution; the kinds per case are NASH_KINDS. A zero gradient: ECOS
  returns inf and cvxpy raises (recorded); mtl gives alpha_t = 0 and solves
  the others' game.
"""

import collections
import functools
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from mtl.core.weighting.db_mtl import db_mtl
from mtl.core.weighting.excess_mtl import excess_mtl
from mtl.core.weighting.fairgrad import fairgrad
from mtl.core.weighting.moco import moco
from mtl.core.weighting.modo import modo
from mtl.core.weighting.nash_mtl import nash_mtl
from mtl.core.weighting.sdmgrad import sdmgrad
from tests.core.weighting import hard_cases
from tests.core.weighting import test_fairgrad as fairgrad_exact
from tests.core.weighting import test_paper_references as paper
from tests.core.weighting.hard_cases import (
  float32_limit,
  rel_err,
  rounding_limit,
  run,
)

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
RTOL = 1e-5
LIMIT_FACTOR = 4.0
# SDMGrad: the authors' own d moving by more than this under one ulp.
ILL_POSED = 1e-3


@functools.cache
def fixture(name):
  return json.loads((FIXTURES / f'{name}_authors.json').read_text())


def cases(name):
  return range(len(fixture(name)['cases']))


def f32(x):
  """A fixture's gradients or losses: float32 numbers (exact)."""
  return np.asarray(x, np.float32)


def f64(x):
  return np.asarray(x, np.float32).astype(np.float64)


def test_every_fixture_names_its_source_and_command():
  for name in (
    'db_mtl',
    'moco',
    'fairgrad',
    'excess_mtl',
    'modo',
    'sdmgrad',
    'nash_mtl',
  ):
    source = fixture(name)['source']
    for entry in source.values() if 'path' not in source else [source]:
      assert len(entry['commit']) == 40 and entry['repository']
      assert entry['command'].endswith('make_author_fixtures.py')
    assert len(fixture(name)['cases']) >= 10


# ---- DB-MTL ------------------------------------------------------------------


@functools.cache
def _db_mtl(beta, beta_sigma):
  return db_mtl(beta=beta, beta_sigma=beta_sigma)


@pytest.mark.parametrize('case', cases('db_mtl'))
def test_db_mtl_twenty_steps_match_the_authors(case):
  row = fixture('db_mtl')['cases'][case]
  method = _db_mtl(row['beta'], row['beta_sigma'])
  t, p = np.shape(row['steps'][0]['gradients'])
  state = method.init(t, p)
  for step, s in enumerate(row['steps']):
    losses = f32(s['losses'])
    out, state = hard_cases.compiled(method)(
      jnp.ones(t),
      state,
      task_grads=f32(s['gradients']),
      losses=losses,
      step=step,
    )
    got = np.asarray(out.gradient, np.float64)
    assert rel_err(got, np.asarray(s['combined'])) < RTOL, step
    # LibMTL returns ones; mtl reports the log losses' weights.
    np.testing.assert_allclose(out.weights, 1 / (f64(losses) + 1e-8), RTOL)


# ---- MoCo --------------------------------------------------------------------


@functools.cache
def _moco(code, kwargs):
  kw = dict(kwargs)
  if code == 'libmtl':  # LibMTL's MoCo: the authors' shared code
    return moco(
      beta=kw['MoCo_beta'],
      beta_sigma=kw['MoCo_beta_sigma'],
      gamma=kw['MoCo_gamma'],
      gamma_sigma=kw['MoCo_gamma_sigma'],
      rho=kw['MoCo_rho'],
      variant='code',
    )
  # Tracking: lambda - delta / k^sigma3 * 2 Y^T Y lambda, projected.
  return moco(
    beta=kw['beta'],
    beta_sigma=kw['sigma2'],
    gamma=2 * kw['delta'],
    gamma_sigma=kw['sigma3'],
    rho=0.0,
    variant='paper',
  )


@pytest.mark.parametrize('case', cases('moco'))
def test_moco_twenty_steps_match_the_authors(case):
  row = fixture('moco')['cases'][case]
  method = _moco(row['code'], tuple(sorted(row['kwargs'].items())))
  t, p = np.shape(row['steps'][0]['gradients'])
  state = method.init(t, p)
  for step, s in enumerate(row['steps']):
    out, state = hard_cases.compiled(method)(
      jnp.ones(t),
      state,
      task_grads=f32(s['gradients']),
      losses=f32(s['losses']),
      step=step,
    )
    got = np.asarray(out.gradient, np.float64)
    assert rel_err(got, np.asarray(s['combined'])) < RTOL, step
    np.testing.assert_allclose(state.lambdas, s['lambdas'], RTOL, RTOL)
    np.testing.assert_allclose(out.weights, np.ones(t))


# ---- FairGrad ----------------------------------------------------------------


@functools.cache
def _fairgrad(alpha):
  return fairgrad(alpha)


def fair_residual(w, g, alpha):
  """max_t |w_t (G w)_t / w_t^{1 - 1/alpha} - 1|: 0 at the solution."""
  return np.max(np.abs(w * (g @ g.T @ w) / w ** (1 - 1 / alpha) - 1))


# least_squares stopped off the solution: (name, alpha).
FAIRGRAD_STOPPED = {
  ('scaled5_seed0', 5.0),
  ('opposed_scaled4_seed0', 5.0),
  ('opposed_scaled6_seed0', 5.0),
}


@pytest.mark.parametrize('case', cases('fairgrad'))
def test_fairgrad_matches_the_authors(case):
  row = fixture('fairgrad')['cases'][case]
  alpha, state = row['alpha'], None

  def exact(x):  # alpha = 1: Nash-MTL's G w = 1 / w (a faster solver)
    if alpha == 1.0:
      return paper.nash_reference(x)
    return fairgrad_exact.reference(x, alpha)

  for step, s in enumerate(row['steps']):
    g, w_authors = f64(s['gradients']), np.asarray(s['w'])
    live = np.linalg.norm(g, axis=1) > 0
    c, d, state = run(_fairgrad(alpha), g, state=state, step=step)
    assert np.all(c[~live] == 0.0)  # a zero gradient: any w_t solves its row
    want = exact(g[live])
    limit_c, limit_d = float32_limit(exact, g[live])
    # The authors' update is their w applied to the gradients.
    assert rel_err(np.asarray(s['combined']), w_authors @ g) < 1e-12
    stopped = (row['name'], alpha) in FAIRGRAD_STOPPED
    assert stopped == (rel_err(w_authors[live], want) > RTOL)
    if stopped:
      assert fair_residual(w_authors, g, alpha) > 0.5
    else:
      want = w_authors[live]
    assert rel_err(c[live], want) < RTOL + LIMIT_FACTOR * limit_c, (
      step,
      c,
      w_authors,
    )
    assert rel_err(d, want @ g[live]) < RTOL + LIMIT_FACTOR * limit_d, step


# ---- ExcessMTL ---------------------------------------------------------------


@functools.cache
def _excess_mtl(step_size):
  return excess_mtl(step_size=step_size)


@pytest.mark.parametrize('case', cases('excess_mtl'))
def test_excess_mtl_twenty_steps_match_the_authors(case):
  row = fixture('excess_mtl')['cases'][case]
  method = _excess_mtl(row['step_size'])
  t, p = np.shape(row['steps'][0]['gradients'])
  state = method.init(t, p)
  for step, s in enumerate(row['steps']):
    g = f32(s['gradients'])
    w, state = hard_cases.compiled(method)(
      jnp.ones(t), state, task_grads=g, losses=f32(s['losses']), step=step
    )
    w = np.asarray(w, np.float64)
    want = np.asarray(s['weights'])
    if row['name'] == 'zero_at_step_1':
      live = np.linalg.norm(f64(row['steps'][0]['gradients']), axis=1) > 0
      if step == 0:
        # The authors' first step only records the estimates; mtl's first
        # update has r_t = 1, but 0 for the task whose estimate is 0.
        np.testing.assert_array_equal(want, np.ones(t))
        r = row['step_size'] * live
        np.testing.assert_allclose(w, t * np.exp(r) / np.exp(r).sum(), RTOL)
      else:  # the authors' 0 / 0 (its first estimate is 0)
        assert np.isnan(want).all() and np.isnan(s['combined']).all()
        assert np.isfinite(w).all() and abs(w.sum() - t) < 1e-5
      continue
    assert rel_err(w, want) < RTOL, step
    combined = np.asarray(s['combined'])
    assert rel_err(w @ f64(g), combined) < RTOL + rounding_limit(want, f64(g))


# ---- MoDo --------------------------------------------------------------------


@functools.cache
def _modo(gamma, rho):
  return modo(gamma=gamma, rho=rho)


def modo_limit(lambdas, samples, gamma, rho, accumulated):
  """The bound on the float32 rounding of lambda's step accumulated so far:
  each step rounds lambda - gamma (G_1 G_2^T + rho I) lambda to ~2^-24 of
  the magnitude of its terms (lambda the previous one), and the projection
  onto the simplex does not enlarge errors. d = G_3^T lambda moves by up to
  |G_3|^T times it."""
  a = np.abs(samples)
  terms = np.abs(lambdas) * (1 + gamma * rho) + gamma * a[0] @ (
    a[1].T @ lambdas
  )
  return accumulated + 2.0**-24 * terms


@pytest.mark.parametrize('case', cases('modo'))
def test_modo_twenty_steps_match_the_authors(case):
  row = fixture('modo')['cases'][case]
  gamma, rho = row['kwargs']['MoDo_gamma'], row['kwargs']['MoDo_rho']
  method = _modo(gamma, rho)
  _, t, _ = np.shape(row['steps'][0]['samples'])
  state, previous, accumulated = method.init(t), np.ones(t) / t, np.zeros(t)
  for step, s in enumerate(row['steps']):
    samples = f32(s['samples'])
    out, state = hard_cases.compiled(method)(
      jnp.ones(t),
      state,
      task_grads_parts=samples,
      losses=jnp.ones(t),
      step=step,
    )
    accumulated = modo_limit(previous, f64(samples), gamma, rho, accumulated)
    previous, want = np.asarray(s['lambdas']), np.asarray(s['combined'])
    np.testing.assert_allclose(state.lambdas, previous, RTOL, RTOL)
    limit = np.linalg.norm(np.abs(f64(samples[2])).T @ accumulated)
    limit /= np.linalg.norm(want)
    got = np.asarray(out.gradient, np.float64)
    assert rel_err(got, want) < RTOL + LIMIT_FACTOR * limit, (step, limit)


# ---- SDMGrad -----------------------------------------------------------------


@functools.cache
def _sdmgrad(code, lamda, niter):
  if code == 'libmtl':  # mtl's defaults: lr 5, momentum 0.5, normalise
    return sdmgrad(lamda=lamda, iterations=niter)
  return sdmgrad(
    lamda=lamda, iterations=niter, lr=10.0, momentum=0.5, normalise=False
  )


def optmn_samples(samples):
  """OptMN-Lab's normalisation applied to xi, xi' (mtl's normalise off):
  G(xi) G(xi')^T / (mean_t sqrt(diag + 1e-4))^2."""
  x = f64(samples)
  scale = np.mean(np.sqrt(np.diag(x[1] @ x[2].T) + 1e-4))
  return np.stack([x[0], x[1] / scale, x[2] / scale]).astype(np.float32)


# (code, name, lamda): the trajectories whose authors' d moves by more than
# ILL_POSED under one ulp at some step (from that step on, not compared).
SDMGRAD_ILL_POSED = {
  ('libmtl', 'opposed_scaled6', 0.3),
  ('libmtl', 'random6', 0.3),
  ('libmtl', 'random10', 0.3),
  ('optmn', 'random6', 0.6),
}


@pytest.mark.parametrize('case', cases('sdmgrad'))
def test_sdmgrad_twenty_steps_match_the_authors(case):
  row = fixture('sdmgrad')['cases'][case]
  method = _sdmgrad(row['code'], row['lamda'], row['niter'])
  _, t, _ = np.shape(row['steps'][0]['samples'])
  state = method.init(t)
  compared = 0
  for step, s in enumerate(row['steps']):
    if s['ulp_spread'] > ILL_POSED:
      break
    samples = f32(s['samples'])
    if row['code'] == 'optmn':
      samples = optmn_samples(samples)
    out, state = hard_cases.compiled(method)(
      jnp.ones(t),
      state,
      task_grads_parts=samples,
      losses=jnp.ones(t),
      step=step,
    )
    limit = RTOL + LIMIT_FACTOR * s['ulp_spread']
    got = np.asarray(out.gradient, np.float64)
    assert rel_err(got, np.asarray(s['combined'])) < limit, step
    np.testing.assert_allclose(state.w, s['w'], limit, limit)
    compared += 1
  key = (row['code'], row['name'], row['lamda'])
  assert (compared < len(row['steps'])) == (key in SDMGRAD_ILL_POSED)


# ---- Nash-MTL ----------------------------------------------------------------


# The authors' alpha at the solution: a tenth of the tolerance (its
# iterations stop when alpha moves by < 1e-6, some 1e-6 to 1e-5 off).
NASH_SOLVED = RTOL / 10


@functools.cache
def _nash_mtl(update_every):
  return nash_mtl(update_every=update_every)


def nash_kind(alpha, previous, g, want):
  """How the authors' alpha relates to the solution `want` of G alpha = 1 /
  alpha: 'solved' (alpha and d within NASH_SOLVED), 'kept' (ECOS failed, the
  previous alpha), 'slack' (a constraint alpha_t (G alpha)_t >= 1 slack) or
  'stopped'."""
  product = alpha * (g @ g.T @ alpha)
  if max(rel_err(alpha, want), rel_err(alpha @ g, want @ g)) < NASH_SOLVED:
    return 'solved'
  if np.array_equal(alpha, previous):
    return 'kept'
  if product.min() > 1 - 1e-3 and product.max() > 1.01:
    return 'slack'
  return 'stopped'


NASH_KINDS = {
  'opposed': {'stopped': 1},
  'conflicting': {'solved': 1},
  'mild': {'solved': 1},
  'orthogonal': {'solved': 1},
  'agreeing': {'solved': 1},
  'nearly_parallel': {'solved': 1},
  'scaled_100x_opposed': {'slack': 1},
  'scaled_100x_conflicting': {'slack': 1},
  'tiny_scale': {'solved': 1},
  'shorter_dominates': {'solved': 1},
  'opposed2_seed0': {'stopped': 1},
  'opposed2_seed1': {'stopped': 1},
  'opposed3_seed0': {'solved': 1},
  'opposed3_seed1': {'solved': 1},
  'opposed5_seed0': {'kept': 1},
  'opposed5_seed1': {'solved': 1},
  'scaled3_seed0': {'stopped': 1},
  'scaled3_seed1': {'slack': 1},
  'scaled5_seed0': {'stopped': 1},
  'scaled5_seed1': {'slack': 1},
  'opposed_scaled4_seed0': {'slack': 1},
  'opposed_scaled4_seed1': {'stopped': 1},
  'opposed_scaled6_seed0': {'stopped': 1},
  'opposed_scaled6_seed1': {'slack': 1},
  'parallel5_seed0': {'solved': 1},
  'parallel5_seed1': {'solved': 1},
  'parallel6_close_seed0': {'solved': 1},
  'parallel6_close_seed1': {'solved': 1},
  'random6_seed0': {'solved': 1},
  'random6_seed1': {'solved': 1},
  'random10_seed0': {'solved': 1},
  'random10_seed1': {'solved': 1},
  'zero_task_seed0': {'error': 1},
  'zero_task_seed1': {'error': 1},
  'opposed2_20_steps': {'stopped': 18, 'kept': 2},
  'opposed5_20_steps': {'kept': 2, 'solved': 18},
  'scaled3_20_steps': {'stopped': 8, 'slack': 12},
  'scaled5_20_steps': {'stopped': 6, 'slack': 13, 'kept': 1},
  'opposed_scaled4_20_steps': {'slack': 13, 'stopped': 6, 'kept': 1},
  'opposed_scaled6_20_steps': {'stopped': 4, 'slack': 15, 'kept': 1},
  'parallel5_20_steps': {'solved': 20},
  'parallel6_close_20_steps': {'solved': 20},
  'random6_20_steps': {'solved': 19, 'kept': 1},
  'random10_20_steps': {'solved': 18, 'kept': 2},
  'zero_task_20_steps': {'error': 1},
  'random6_20_steps_every_3': {'solved': 7, 'reused': 13},
}


@pytest.mark.parametrize('case', cases('nash_mtl'))
def test_nash_mtl_matches_the_authors(case):
  row = fixture('nash_mtl')['cases'][case]
  every = row['update_every']
  method = _nash_mtl(every)
  name = row['name'] + ('' if every == 1 else f'_every_{every}')
  t = len(row['steps'][0]['gradients'])
  state, previous, kinds = None, np.ones(t), collections.Counter()
  for step, s in enumerate(row['steps']):
    g = f64(s['gradients'])
    c, d, state = run(method, g, state=state, step=step)
    if 'error' in s:  # a zero gradient: ECOS returns inf, cvxpy raises
      assert s['error'] == 'ValueError: Variable value must be nonnegative.'
      live = np.linalg.norm(g, axis=1) > 0
      assert not live.all() and np.all(c[~live] == 0.0)
      want = paper.nash_reference(g[live])
      limit, _ = float32_limit(paper.nash_reference, g[live])
      assert rel_err(c[live], want) < RTOL + LIMIT_FACTOR * limit
      kinds['error'] += 1
      break
    alpha = np.asarray(s['alpha'])
    assert rel_err(np.asarray(s['combined']), alpha @ g) < 1e-12
    if step % every:  # both reuse their previous alpha
      np.testing.assert_array_equal(alpha, previous)
      np.testing.assert_array_equal(c, np.asarray(state.alpha))
      kinds['reused'] += 1
      continue
    exact = paper.nash_reference(g)
    kind = nash_kind(alpha, previous, g, exact)
    kinds[kind] += 1
    want = alpha if kind == 'solved' else exact
    limit_c, limit_d = float32_limit(paper.nash_reference, g)
    assert rel_err(c, want) < RTOL + LIMIT_FACTOR * limit_c, (step, kind)
    assert rel_err(d, want @ g) < RTOL + LIMIT_FACTOR * limit_d, (step, kind)
    previous = alpha
  assert dict(kinds) == NASH_KINDS[name]
