"""Synthetic impressions with known click and conversion probabilities.

The data ESMM (Ma et al., SIGIR 2018) is about, with the ground truth that
real logs never have: every impression i of item v(i) with features x_i has

  p_click(i) = sigmoid(a_c + <e_v, q_c> + w_c . x_i)
  p_conv(i)  = sigmoid(a_v + <e_v, q_v> + w_v . x_i)      (given a click)
  click ~ Bernoulli(p_click),  conversion ~ Bernoulli(p_conv) for EVERY
  impression, observed only where click = 1.

Item factors e_v ~ N(0, I_k) are shared by both probabilities (q_v = rho q_c
+ sqrt(1 - rho^2) q_perp), items are drawn with Zipf popularity, so most
items are clicked rarely; x ~ N(0, I_d) and w_v = rho_x w_c + ..., so the
clicked impressions are a biased sample (high w_c . x) of the feature space.
A CVR model trained on the clicked impressions sees few rows per item and a
shifted x; ESMM learns from all impressions. The intercepts set the click
rate and the conversion rate among clicks.

Tasks: 'click' (all impressions), 'conversion' (mask = click: the CVR sample
space; label the observed conversion), and the metric-only 'cvr_all' (the
conversion output scored over ALL impressions against the latent
conversion, the debiasing measure). `stats['oracle_auc']` per split is the
AUC of the true p_conv on those latent labels, the best any model can do;
`stats['oracle_ctr_auc']` the AUC of the true p_click on the clicks.
Deterministic in `seed`.

What a model can learn of p_conv: the feature part w_v . x from the
conversions (d weights, any model); the item part <e_v, q_v> only item by
item, from the item's conversions (few where clicks are rare) or, for its
rho_items share along q_c, from the item's clicks, which a model sharing the
item embeddings between CTR and CVR (ESMM) learns on all impressions. So the
oracle is within reach only with many impressions per item and rho_items
near 1; with few impressions per item (many items, flat popularity) no model
gets near it.
"""

import numpy as np

from mtl.core.tasks import Task
from mtl.data.dataset import Dataset
from mtl.errors import ConfigError

SPLITS = ('train', 'validation', 'test')


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _unit(rng, d):
  v = rng.standard_normal(d)
  return v / np.linalg.norm(v)


def _mix(rng, u, rho):
  """A unit vector at correlation rho with unit vector u."""
  w = rng.standard_normal(u.shape)
  w -= (w @ u) * u
  return rho * u + np.sqrt(1 - rho**2) * w / np.linalg.norm(w)


def auc(scores, labels) -> float:
  """Exact AUC (Mann-Whitney, ties counted half), numpy."""
  scores, labels = np.asarray(scores), np.asarray(labels) > 0
  order = np.argsort(scores, kind='mergesort')
  ranks = np.empty(len(scores))
  s = scores[order]
  # Average ranks over ties.
  starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
  ends = np.r_[starts[1:], len(s)]
  for a, b in zip(starts, ends, strict=True):
    ranks[order[a:b]] = (a + b + 1) / 2
  pos = labels.sum()
  neg = len(labels) - pos
  return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def load_entire_space(
  *,
  n_train: int = 200_000,
  n_validation: int = 50_000,
  n_test: int = 50_000,
  num_items: int = 2000,
  zipf: float = 1.1,
  item_dim: int = 8,
  d: int = 16,
  click_rate: float = 0.1,
  conversion_rate: float = 0.2,
  rho_items: float = 0.8,
  rho_features: float = -0.3,
  item_scale: float = 1.0,
  feature_scale: float = 1.0,
  seed: int = 0,
) -> Dataset:
  """Generates the three splits; see the module docstring.

  Args:
    n_train, n_validation, n_test: impressions per split.
    num_items: item vocabulary (the sparse feature 'item').
    zipf: popularity exponent: item v drawn with weight (v + 1)^-zipf.
    item_dim: k, the item factors' width.
    d: dense features.
    click_rate, conversion_rate: target mean p_click, and mean p_conv
      among clicked impressions, reached by bisection on the intercepts.
    rho_items: correlation of the item directions q_v and q_c.
    rho_features: correlation of w_v and w_c (negative: the clicked region
      converts worse, a strong selection bias).
    item_scale, feature_scale: norms of the item and feature effects.
    seed: everything derives from it.
  """
  for name, v in (
    ('click_rate', click_rate),
    ('conversion_rate', conversion_rate),
  ):
    if not 0 < v < 1:
      raise ConfigError(f'entire_space: {name} is {v}, expected in (0, 1)')
  if not -1 <= rho_items <= 1 or not -1 <= rho_features <= 1:
    raise ConfigError(
      f'entire_space: rho_items {rho_items} and rho_features {rho_features} '
      'must be in [-1, 1]'
    )
  rng = np.random.default_rng(seed)
  items = rng.standard_normal((num_items, item_dim))
  q_c = _unit(rng, item_dim) * item_scale
  q_v = _mix(rng, q_c / item_scale, rho_items) * item_scale
  w_c = _unit(rng, d) * feature_scale
  w_v = _mix(rng, w_c / feature_scale, rho_features) * feature_scale
  popularity = (np.arange(num_items) + 1.0) ** -zipf
  popularity /= popularity.sum()
  sizes = dict(zip(SPLITS, (n_train, n_validation, n_test), strict=True))
  raw = {}
  for split in SPLITS:
    n = sizes[split]
    v = rng.choice(num_items, size=n, p=popularity)
    x = rng.standard_normal((n, d)).astype(np.float32)
    raw[split] = (v, x, items[v] @ q_c + x @ w_c, items[v] @ q_v + x @ w_v)
  # Intercepts from the training split, by bisection on the target rates.
  _, _, zc, zv = raw['train']
  a_c = _bisect(lambda a: _sigmoid(a + zc).mean() - click_rate)
  pc = _sigmoid(a_c + zc)
  a_v = _bisect(
    lambda a: (pc * _sigmoid(a + zv)).sum() / pc.sum() - conversion_rate
  )
  splits, oracle, oracle_ctr = {}, {}, {}
  for split in SPLITS:
    v, x, zc, zv = raw[split]
    p_click = _sigmoid(a_c + zc)
    p_conv = _sigmoid(a_v + zv)
    click = (rng.random(len(v)) < p_click).astype(np.float32)
    latent = (rng.random(len(v)) < p_conv).astype(np.float32)
    ones = np.ones_like(click)
    splits[split] = {
      'dense': x,
      'sparse': v[:, None].astype(np.int32),
      'labels': np.stack([click, latent * click, latent]),
      'mask': np.stack([ones, click, ones]),
    }
    oracle[split] = auc(p_conv, latent)
    oracle_ctr[split] = auc(p_click, click)
  tasks = (
    Task('click'),
    Task('conversion'),
    Task('cvr_all', train=False, head='conversion'),
  )
  return Dataset(
    name='entire_space',
    tasks=tasks,
    dense_names=tuple(f'x{i}' for i in range(d)),
    sparse_names=('item',),
    vocab_sizes=(num_items,),
    splits=splits,
    stats={
      'oracle_auc': oracle,
      'oracle_ctr_auc': oracle_ctr,
      'intercepts': (float(a_c), float(a_v)),
      'click_rate': {
        s: float(a['labels'][0].mean()) for s, a in splits.items()
      },
    },
  )


def _bisect(f, lo=-30.0, hi=30.0, iters=80):
  """The root of increasing f in [lo, hi]."""
  for _ in range(iters):
    mid = (lo + hi) / 2
    if f(mid) > 0:
      hi = mid
    else:
      lo = mid
  return (lo + hi) / 2
