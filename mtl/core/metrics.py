"""Metrics: AUC and losses computed inside the compiled program, and their
host-side summaries.

AUC comes from binned counts of positive and negative scores: counts are
summable across batches, devices and hosts, so evaluation never gathers
predictions to the host. The bins are `num_bins` equal-width bins on the
logit over [-LOGIT_RANGE, LOGIT_RANGE] (beyond it, in the end bins).

The error bound. Only a positive and a negative in the same bin are
approximated: counted as a tie (half a win), so the error is at most half
the share of (positive, negative) pairs that share a bin,
  |AUC_binned - AUC| <= 1/2 sum_b pi_b nu_b <= 1/2 h sup f,
with pi_b, nu_b the shares of positives and negatives in bin b, h the bin
width (2 LOGIT_RANGE / num_bins) and f the density of either class's logits.
A lower base rate moves a model's logits down by its log-odds, which leaves
this bound unchanged while they stay inside the range (+-20 is a probability
of 2e-9). Equal-width bins on the probability put nearly all the negatives
of a 1e-4 rate in the first bin (a bound near 1/2: at 1,024 bins an exact
0.81 read 0.57 there, at 2**14 bins 0.812). At the default 2**16 bins,
h = 6.1e-4: for unit-variance Gaussian logits of an AUC of 0.80 the share is
1.2e-4, a bound of 6e-5 at any base rate (1.2e-4 / sigma by sup f for a
spread sigma), and the error seen is below 1e-6, as pairs within a bin go
either way (tests: scikit-learn at base rates 1e-1 to 1e-4). The cost is a
scatter-add of B rows and 2 x 2**16 int32 counts per task to sum.
"""

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_BINS = 2**16
LOGIT_RANGE = 20.0


def auc_counts(
  logits: jnp.ndarray,
  labels: jnp.ndarray,
  mask: jnp.ndarray,
  *,
  num_bins: int = DEFAULT_BINS,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Histograms of positive and negative logits per task.

  Args:
    logits: [T, B] scores before the sigmoid (binning the logit keeps the
      resolution where the sigmoid saturates, at low and high rates).
    labels: [T, B] binary labels.
    mask: [T, B]; rows with mask 0 are not counted.
    num_bins: equal-width bins on [-LOGIT_RANGE, LOGIT_RANGE]; logits
      beyond it count in the end bins.

  Returns:
    (positives [T, num_bins], negatives [T, num_bins]) as int32 counts
    (exact to 2**31 rows per bin, where float32 would stop at 2**24).
  """
  scale = num_bins / (2 * LOGIT_RANGE)
  idx = jnp.clip((logits + LOGIT_RANGE) * scale, 0, num_bins - 1)
  idx = idx.astype(jnp.int32)
  keep = mask > 0
  pos = (keep & (labels > 0.5)).astype(jnp.int32)
  neg = (keep & (labels <= 0.5)).astype(jnp.int32)

  def one_task(i, p, n):
    zeros = jnp.zeros((num_bins,), jnp.int32)
    return zeros.at[i].add(p), zeros.at[i].add(n)

  return jax.vmap(one_task)(idx, pos, neg)


def auc_from_counts(pos, neg):
  """ROC AUC from score histograms [..., bins]; ties count one half.

  AUC = P(score+ > score-) + 0.5 P(score+ == score-), summed bin by bin: a
  negative in bin b is beaten by every positive in a higher bin. NaN when a
  task has no positives or no negatives. Given numpy arrays it computes in
  float64 on the host (the final numbers); given jax arrays, in float32
  inside the program.
  """
  xp = jnp if isinstance(pos, jax.Array) else np
  dtype = jnp.float32 if xp is jnp else np.float64
  pos = pos.astype(dtype)
  neg = neg.astype(dtype)
  pos_above = xp.cumsum(pos[..., ::-1], axis=-1)[..., ::-1] - pos
  wins = xp.sum(neg * (pos_above + 0.5 * pos), axis=-1)
  total = xp.sum(pos, axis=-1) * xp.sum(neg, axis=-1)
  return xp.where(total > 0, wins / xp.maximum(total, 1.0), xp.nan)


# Host side: summaries of the counts and metrics a dispatch returned.


def summarize_eval(counts, tasks, prefix: str) -> dict[str, float]:
  """Host-side metrics from summed eval counts (float64 AUC): a binary
  task's auc and logloss (the plain BCE, whatever its training loss), a
  regression's mse (in its trained units) and rmse (in its label's,
  `rmse_in_label_units`)."""
  counts = jax.device_get(counts)
  out = {}
  loss = counts['loss_sum'] / np.maximum(counts['count'], 1.0)
  auc = auc_from_counts(np.asarray(counts['pos']), np.asarray(counts['neg']))
  for t, task in enumerate(tasks):
    if task.kind == 'binary':
      out[f'{prefix}/auc/{task.name}'] = float(auc[t])
      out[f'{prefix}/logloss/{task.name}'] = float(loss[t])
    elif task.kind == 'weighted_logistic':  # AUC: label (watch time) > 0.5
      out[f'{prefix}/auc/{task.name}'] = float(auc[t])
      out[f'{prefix}/weighted_logloss/{task.name}'] = float(loss[t])
    else:
      out[f'{prefix}/mse/{task.name}'] = float(loss[t])
      out[f'{prefix}/rmse/{task.name}'] = rmse_in_label_units(loss[t], task)
  return out


def rmse_in_label_units(mse, task) -> float:
  """sqrt(mse) * task.label_std: a regression's RMSE in its label's units
  (after a table's `transform`, before its `scale`: a standardised label's
  mse is in units of its std; centring changes no difference)."""
  return float(np.sqrt(np.float64(mse)) * task.label_std)


def selection_score(summary: dict, tasks, prefix: str) -> float:
  """Higher is better: the first task's AUC, or minus its MSE."""
  main = tasks[0]
  if main.kind in ('binary', 'weighted_logistic'):
    return summary[f'{prefix}/auc/{main.name}']
  return -summary[f'{prefix}/mse/{main.name}']


def summarize_train(chunk_metrics, tasks) -> dict[str, float]:
  """Host-side means of a dispatch's train metrics ([K, ...] each)."""
  m = jax.device_get(chunk_metrics)
  out = {'train/total_loss': float(np.mean(m['total_loss']))}
  for t, task in enumerate(tasks):
    out[f'train/loss/{task.name}'] = float(np.mean(m['loss'][:, t]))
    out[f'train/weight/{task.name}'] = float(np.mean(m['weight'][:, t]))
  return out
