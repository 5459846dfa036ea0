"""Masked per-task losses.

Every loss is returned as a masked *sum* and a *count* per task, so that the
mean over a global batch split across devices (or padded for evaluation) is
exact: `sum_over_devices(sum) / sum_over_devices(count)`.

A binary task's training loss is its `Task`'s: the plain BCE, or with
`pos_weight` / `focal_gamma` / `focal_alpha` the weighted or focal loss
(`binary_loss`); evaluation (`metric=True`) always reports the plain BCE.
"""

import jax
import jax.numpy as jnp
import optax

from mtl.core.tasks import Task


def weighted_logistic(logits: jnp.ndarray, watch: jnp.ndarray) -> jnp.ndarray:
  """YouTube's weighted logistic regression, per example.

  Covington, Adams and Sargin, "Deep Neural Networks for YouTube
  Recommendations", RecSys 2016, Sec. 4.2: a clicked impression (watch
  time T > 0) is a positive weighted by T, an unclicked one a negative of
  weight 1: T * -log sigmoid(z) or -log(1 - sigmoid(z)). The optimum odds
  e^z are sum(T) / #negatives = E[T] / (1 - P), close to the expected watch
  time E[T] (T = 0 without a click) when the click rate P is small.
  """
  positive = watch > 0
  return jnp.where(
    positive,
    watch * optax.sigmoid_binary_cross_entropy(logits, jnp.ones_like(logits)),
    optax.sigmoid_binary_cross_entropy(logits, jnp.zeros_like(logits)),
  )


def binary_loss(
  logits: jnp.ndarray,
  labels: jnp.ndarray,
  *,
  pos_weight: float = 1.0,
  gamma: float = 0.0,
  alpha: float | None = None,
) -> jnp.ndarray:
  """A binary task's per-example training loss from logits.

  Lin, Goyal, Girshick, He and Dollar, "Focal Loss for Dense Object
  Detection", ICCV 2017, eq. 5: FL(p_t) = -alpha_t (1 - p_t)^gamma log p_t,
  p_t = p for a positive and 1 - p for a negative, alpha_t = alpha for a
  positive and 1 - alpha for a negative (alpha None: alpha_t = 1). Positives
  are weighted by `pos_weight` on top: at gamma 0 and no alpha, the weighted
  BCE -(w y log p + (1 - y) log(1 - p)). A soft label y mixes the positive
  and negative terms linearly, as the BCE does.

  With the defaults it is `optax.sigmoid_binary_cross_entropy` itself (the
  same ops, bit for bit). Otherwise log p = log_sigmoid(z), log(1 - p) =
  log_sigmoid(-z) and (1 - p)^gamma = exp(gamma log_sigmoid(-z)): finite
  losses and gradients at any finite logit.
  """
  if pos_weight == 1.0 and gamma == 0.0 and alpha is None:
    return optax.sigmoid_binary_cross_entropy(logits, labels)
  log_p = jax.nn.log_sigmoid(logits)
  log_q = jax.nn.log_sigmoid(-logits)  # log(1 - p)
  pos, neg = -log_p * pos_weight, -log_q
  if gamma != 0.0:
    pos = pos * jnp.exp(gamma * log_q)  # (1 - p)^gamma
    neg = neg * jnp.exp(gamma * log_p)  # p^gamma
  if alpha is not None:
    pos, neg = alpha * pos, (1.0 - alpha) * neg
  return labels * pos + (1.0 - labels) * neg


def elementwise_losses(
  logits: jnp.ndarray,
  labels: jnp.ndarray,
  *,
  tasks: tuple[Task, ...],
  metric: bool = False,
) -> jnp.ndarray:
  """Per-example losses [T, B]: BCE-with-logits (binary; its training loss,
  `binary_loss`, unless `metric`), squared error (regression) or
  weighted_logistic."""
  rows = []
  for t, task in enumerate(tasks):  # T is static and small: one row each.
    if task.kind == 'binary' and (metric or task.plain_loss):
      rows.append(optax.sigmoid_binary_cross_entropy(logits[t], labels[t]))
    elif task.kind == 'binary':
      rows.append(
        binary_loss(
          logits[t],
          labels[t],
          pos_weight=task.pos_weight,
          gamma=task.focal_gamma,
          alpha=task.focal_alpha,
        )
      )
    elif task.kind == 'weighted_logistic':
      rows.append(weighted_logistic(logits[t], labels[t]))
    else:
      rows.append(jnp.square(logits[t] - labels[t]))
  return jnp.stack(rows)


def masked_loss_sums(
  logits: jnp.ndarray,
  labels: jnp.ndarray,
  mask: jnp.ndarray,
  *,
  tasks: tuple[Task, ...],
  extra: jnp.ndarray | None = None,
  weights: jnp.ndarray | None = None,
  metric: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Returns (sum of masked losses [T], number of unmasked rows [T]).

  Masked rows contribute exactly zero, whatever their logits or labels hold
  (`jnp.where`, not a multiplication, so a NaN in a padded row cannot leak).
  `extra` [T, B] adds a model's own per-example terms (AITM's calibrator).
  `weights` [B] (optional) weights each row's loss and its count: the count
  is then the sum of the weights of unmasked rows (bagging's Poisson counts,
  `mtl.core.bagging`; a weight of 0 drops the row). `metric=True` gives
  the losses evaluation reports (a binary task's plain BCE, whatever its
  pos_weight or focal keys).
  """
  per_example = elementwise_losses(logits, labels, tasks=tasks, metric=metric)
  if extra is not None:
    per_example = per_example + extra
  keep = mask > 0
  if weights is not None:
    keep = keep & (weights > 0)
    per_example = per_example * weights
  sums = jnp.sum(jnp.where(keep, per_example, 0.0), axis=1)
  counts = jnp.sum(keep.astype(jnp.float32), axis=1)
  if weights is not None:
    counts = jnp.sum(jnp.where(keep, weights, 0.0), axis=1)
  return sums, counts


def masked_mean_losses(
  logits: jnp.ndarray,
  labels: jnp.ndarray,
  mask: jnp.ndarray,
  *,
  tasks: tuple[Task, ...],
) -> jnp.ndarray:
  """Mean loss of each task over its unmasked rows [T] (0 when none)."""
  sums, counts = masked_loss_sums(logits, labels, mask, tasks=tasks)
  return sums / jnp.maximum(counts, 1.0)
