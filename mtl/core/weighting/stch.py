"""Smooth Tchebycheff scalarisation: a smooth max of the normalised losses.

Lin, Zhang, Yang, Liu, Wang & Zhang, "Smooth Tchebycheff Scalarization for
Multi-Objective Optimization", ICML 2024. The Tchebycheff scalarisation
max_t lambda_t (f_t - z_t) (their Eq. 3) is smoothed (their STCH, Eq. 8) to

  S_mu(f | lambda) = mu log sum_t exp(lambda_t (f_t - z_t) / mu),

and the model follows its gradient, sum_t (dS / dL_t) grad L_t. So the loss
weights of this step are

  w_t = T dS / dL_t = T p_t lambda_t df_t / dL_t,
  p = softmax(lambda (f - z) / mu),

with T the factor of the authors' multi-task code (and of LibMTL's `STCH`,
taken from it), which multiplies S by the task count, so that equal
normalised losses give the warm-up's weights. mu > 0 is the smoothing: mu ->
0 is the Tchebycheff max (all weight on the worst task), large mu tends to
the linear scalarisation.

The objectives f follow the authors' multi-task code: a warm-up of
`warmup_epochs` epochs minimises sum_t log L_t (weights 1 / L_t); during the
epoch numbered `warmup_epochs` the losses are averaged into the nadir point
n_t (still with the log weights); from the next epoch on

  log_losses=True (theirs):  f_t = log(L_t / n_t),  df_t/dL_t = 1 / L_t,
  log_losses=False (the paper's STCH on the losses themselves, nadir
                    normalised): f_t = L_t / n_t,  df_t/dL_t = 1 / n_t,

with the ideal point z = `ideal` (default 0: log(L / n) = 0 at the nadir in
the log form, a zero loss in the other) and the preference lambda =
`preference` (default ones, the code's; the paper takes lambda on the
simplex: lambda = 1 / T with smoothing mu / T gives these weights over T).
Losses are clipped at 1e-20 before a log or a division, the code's floor.
The weights multiply the incoming weights.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl.core.weighting.base import WeightingMethod, check_num_tasks
from mtl.errors import ConfigError

TINY = 1e-20


class STCHState(NamedTuple):
  nadir_sum: jnp.ndarray  # [T] losses summed over the nadir epoch
  count: jnp.ndarray  # int32: steps summed


def stch(
  mu: float = 1.0,
  warmup_epochs: int = 4,
  log_losses: bool = True,
  preference: Sequence[float] | None = None,
  ideal: Sequence[float] | None = None,
) -> WeightingMethod:
  """STCH (Lin et al. 2024), as in the authors' multi-task code.

  Args:
    mu: smoothing parameter, > 0 (the authors' code: 1).
    warmup_epochs: int >= 0, epochs of sum_t log L_t before the nadir
      epoch (the authors' code: 4).
    log_losses: f_t = log(L_t / n_t) (True, the code's) or L_t / n_t.
    preference: lambda, one positive number per task (None: ones).
    ideal: z, one number per task, on the scale of f (None: zeros).
  """
  if not mu > 0:
    raise ConfigError(f'weighting stch: mu is {mu}, expected > 0')
  if isinstance(warmup_epochs, bool) or not (
    isinstance(warmup_epochs, int) and warmup_epochs >= 0
  ):
    raise ConfigError(
      f'weighting stch: warmup_epochs is {warmup_epochs!r}, expected an '
      'int >= 0'
    )
  if preference is not None and any(not float(p) > 0 for p in preference):
    raise ConfigError(
      f'weighting stch: preference is {list(preference)}, expected '
      'positive numbers'
    )

  def init(num_tasks):
    check_num_tasks('stch', preference, num_tasks, 'preference')
    check_num_tasks('stch', ideal, num_tasks, 'ideal')
    return STCHState(
      jnp.zeros((num_tasks,), jnp.float32), jnp.zeros((), jnp.int32)
    )

  def update(weights, state, *, losses, epoch, **unused):
    t = weights.shape[0]
    losses = jax.lax.stop_gradient(losses.astype(jnp.float32))
    clipped = jnp.maximum(losses, TINY)
    lam = (
      jnp.ones((t,), jnp.float32)
      if preference is None
      else jnp.asarray(preference, jnp.float32)
    )
    z = (
      jnp.zeros((t,), jnp.float32)
      if ideal is None
      else jnp.asarray(ideal, jnp.float32)
    )
    nadir = jnp.where(
      state.count > 0,
      state.nadir_sum / jnp.maximum(state.count, 1).astype(jnp.float32),
      1.0,
    )
    nadir = jnp.maximum(nadir, TINY)
    if log_losses:
      f = jnp.log(clipped / nadir)  # one rounding before the log
      df = 1.0 / clipped
    else:
      f = clipped / nadir
      df = 1.0 / nadir
    p = jax.nn.softmax(lam * (f - z) / mu)
    smooth = t * p * lam * df
    warm = 1.0 / clipped
    epoch = jnp.asarray(epoch)
    w = jnp.where(epoch > warmup_epochs, smooth, warm)
    nadir_epoch = epoch == warmup_epochs
    new_state = STCHState(
      nadir_sum=jnp.where(
        nadir_epoch, state.nadir_sum + losses, state.nadir_sum
      ),
      count=state.count + nadir_epoch.astype(jnp.int32),
    )
    return weights * w, new_state

  return WeightingMethod(init, update)
