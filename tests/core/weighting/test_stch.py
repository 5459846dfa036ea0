"""STCH (Lin et al. 2024) against a float64 reference, step by step.

The reference replays the authors' multi-task procedure in numpy float64:
warm-up epochs on sum_t log L_t, the nadir point averaged over the epoch
numbered `warmup_epochs`, then the smooth Tchebycheff scalarisation
T mu log sum_t exp(lambda_t (f_t - z_t) / mu) of the paper; each step's loss
weights are the derivatives of the scalar being minimised, taken by complex
steps (Im S(L + i h e_t) / h, exact to float64 rounding; no closed form
shared with mtl). mtl's weights must be within
1e-5 relative at each of 20 steps.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from mtl.core.weighting.stch import stch
from mtl.errors import ConfigError
from mtl.shell import validate

RTOL = 1e-5
STEPS, STEPS_PER_EPOCH = 20, 3


class Reference:
  """The authors' STCH procedure, float64, weights by complex steps."""

  def __init__(self, mu, warmup_epochs, log_losses, preference, ideal):
    self.mu, self.warmup = mu, warmup_epochs
    self.log_losses = log_losses
    self.preference, self.ideal = preference, ideal
    self.total, self.count = 0.0, 0

  def objective(self, losses, epoch):
    t = len(losses)
    if epoch <= self.warmup:
      return np.sum(np.log(losses + 1e-20))
    nadir = self.total / self.count
    lam = np.ones(t) if self.preference is None else np.array(self.preference)
    z = np.zeros(t) if self.ideal is None else np.array(self.ideal)
    f = np.log(losses / nadir + 1e-20) if self.log_losses else losses / nadir
    return t * self.mu * np.log(np.sum(np.exp(lam * (f - z) / self.mu)))

  def step(self, losses, epoch):
    losses = np.asarray(losses, np.float64)
    weights = []
    for k in range(len(losses)):  # complex step: exact to rounding
      x = losses.astype(np.complex128)
      x[k] += 1e-30j
      weights.append(self.objective(x, epoch).imag / 1e-30)
    if epoch == self.warmup:
      self.total = self.total + losses.real
      self.count += 1
    return np.array(weights)


def trajectory(kind, rng):
  """[STEPS, T] positive losses."""
  k = np.arange(STEPS)[:, None]
  if kind == 'opposed':  # one task falls while the other rises
    base = np.concatenate([0.9 * 0.93**k, 0.2 * 1.05**k], axis=1)
  elif kind == 'scaled_100x':
    base = np.concatenate([0.01 * 0.97**k, 1.0 * 0.99**k], axis=1)
  elif kind == 'near_equal':
    base = 0.5 * 0.98**k + np.array([[0.0, 1e-3, -1e-3]])
  elif kind == 'five':
    base = np.array([[0.3, 0.05, 2.4, 0.9, 0.66]]) * 0.97**k
  else:  # six tasks, logspace
    base = np.logspace(-2, 1, 6)[None, :] * 0.98**k
  noise = np.exp(0.05 * rng.normal(size=base.shape))
  return base * noise


SETTINGS = {
  'default': {},
  'small_mu': {'mu': 0.1},
  'large_mu': {'mu': 10.0},
  'raw_losses': {'log_losses': False},
  'no_warmup': {'warmup_epochs': 0},
}
CASES = [
  ('opposed', 'default'),
  ('opposed', 'small_mu'),
  ('scaled_100x', 'default'),
  ('scaled_100x', 'raw_losses'),
  ('near_equal', 'default'),
  ('near_equal', 'large_mu'),
  ('five', 'default'),
  ('five', 'no_warmup'),
  ('six', 'small_mu'),
  ('six', 'raw_losses'),
]


def kwargs_for(setting):
  kw = {'mu': 1.0, 'warmup_epochs': 2, 'log_losses': True}
  kw.update(SETTINGS[setting])
  kw.setdefault('preference', None)
  kw.setdefault('ideal', None)
  return kw


@functools.cache
def _compiled(key):
  method = stch(**dict(key))
  return method, jax.jit(method.update)


def run_both(losses, kw):
  key = tuple(
    (k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items()
  )
  method, update = _compiled(key)
  ref = Reference(**kw)
  t = losses.shape[1]
  state = method.init(t)
  for step, row in enumerate(losses):
    epoch = step // STEPS_PER_EPOCH
    w, state = update(
      jnp.ones(t),
      state,
      losses=jnp.asarray(row, jnp.float32),
      step=step,
      epoch=epoch,
    )
    want = ref.step(np.float32(row).astype(np.float64), epoch)
    yield epoch, np.asarray(w, np.float64), want


@pytest.mark.parametrize('kind, setting', CASES)
def test_matches_the_reference_over_twenty_steps(kind, setting):
  losses = trajectory(kind, np.random.default_rng(len(kind)))
  kw = kwargs_for(setting)
  phases = set()
  for epoch, got, want in run_both(losses, kw):
    np.testing.assert_allclose(got, want, rtol=RTOL)
    phases.add(epoch > kw['warmup_epochs'])
  assert phases == {False, True}  # both the warm-up and STCH were checked


def test_preference_and_ideal_point():
  losses = trajectory('five', np.random.default_rng(3))
  kw = kwargs_for('default')
  kw.update(preference=[0.1, 0.3, 0.2, 0.25, 0.15], ideal=[-0.2] * 5, mu=0.2)
  for _, got, want in run_both(losses, kw):
    np.testing.assert_allclose(got, want, rtol=RTOL)


def test_by_hand_after_the_nadir_epoch():
  # warmup 0: epoch 0 gives the nadir n = (0.5, 2.0) (one step); at epoch 1
  # with L = (0.25, 2.0): f = log(L / n) = (-log 2, 0), mu = 1,
  # p = softmax(f) = (1/3, 2/3), w = T p / L = 2 (1/3 / 0.25, 2/3 / 2)
  # = (8/3, 2/3).
  method = stch(warmup_epochs=0)
  state = method.init(2)
  w0, state = method.update(
    jnp.ones(2), state, losses=jnp.array([0.5, 2.0]), step=0, epoch=0
  )
  np.testing.assert_allclose(w0, [2.0, 0.5], rtol=1e-6)  # 1 / L
  w1, _ = method.update(
    jnp.ones(2), state, losses=jnp.array([0.25, 2.0]), step=1, epoch=1
  )
  np.testing.assert_allclose(w1, [8 / 3, 2 / 3], rtol=1e-6)


def test_small_mu_puts_the_weight_on_the_worst_normalised_task():
  method = stch(mu=0.01, warmup_epochs=0, log_losses=False)
  state = method.init(3)
  _, state = method.update(
    jnp.ones(3), state, losses=jnp.array([1.0, 1.0, 1.0]), step=0, epoch=0
  )
  w, _ = method.update(
    jnp.ones(3), state, losses=jnp.array([0.5, 0.9, 0.7]), step=1, epoch=1
  )
  np.testing.assert_allclose(w, [0.0, 3.0, 0.0], atol=1e-6)


@pytest.mark.parametrize(
  'kwargs, message',
  [
    ({'mu': 0.0}, 'weighting stch: mu is 0.0, expected > 0'),
    ({'warmup_epochs': -1}, 'warmup_epochs is -1, expected an int >= 0'),
    ({'preference': (1.0, 0.0)}, r'preference is \[1.0, 0.0\], expected'),
  ],
)
def test_out_of_range_is_one_line_error(kwargs, message):
  with pytest.raises(ConfigError, match=message) as err:
    stch(**kwargs)
  assert '\n' not in str(err.value)


def test_lengths_are_checked_and_the_config_key_is_named():
  with pytest.raises(ConfigError, match="'stch': 3 preference for 2 tasks"):
    stch(preference=(1.0, 1.0, 1.0)).init(2)
  config = common.base_config('mmoe', 'entire_space')
  config.weighting_name = 'stch'
  validate.check_config(config)  # The defaults pass.
  config.weighting.stch.mu = -1.0
  with pytest.raises(ConfigError, match=r'^weighting.stch.mu is -1.0, exp'):
    validate.check_config(config)
