"""The MMoE synthetic two-task regression data, with a controllable correlation.

Source: Ma et al., "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018, Sec. 3.2 (see docs/REPLICATION.md):

  u1, u2 orthogonal unit vectors in R^d,
  w1 = c u1,  w2 = c (p u1 + sqrt(1 - p^2) u2),  so cos(w1, w2) = p,
  x ~ N(0, I_d),
  y_k = w_k.x + sum_{i=1..m} sin(alpha_i w_k.x + beta_i) + eps_k.

The paper leaves c, m, alpha and beta open; the defaults here are c = 1,
m = 10, alpha_i = i, beta_i = i^2 (the values REPLICATION.md quotes). The
paper writes the noise as N(0, 0.01); in the usual N(mean, variance) notation
that is a variance of 0.01, so the default noise_std is 0.1.

Randomness: one numpy SeedSequence(seed) is spawned into independent streams
for the task directions and for each split, so p, c, alpha and beta change
the labels but not u1, u2 or x (a sweep over p compares like with like), and
a split's rows do not depend on the other splits' sizes.
"""

from collections.abc import Sequence

import numpy as np

from mtl.core.tasks import Task
from mtl.data.dataset import Dataset
from mtl.errors import ConfigError

SPLIT_STREAMS = {'train': 1, 'validation': 2, 'test': 3}  # 0: directions


def _streams(seed: int) -> list[np.random.Generator]:
  children = np.random.SeedSequence(seed).spawn(1 + len(SPLIT_STREAMS))
  return [np.random.default_rng(s) for s in children]


def _shape(
  m: int, alpha: Sequence[float] | None, beta: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray]:
  """alpha, beta as float arrays of length m (defaults i and i^2)."""
  if m < 0:
    raise ConfigError(f'synthetic: m is {m}, expected m >= 0')
  i = np.arange(1, m + 1, dtype=np.float64)
  alpha = i if alpha is None else np.asarray(alpha, np.float64)
  beta = i**2 if beta is None else np.asarray(beta, np.float64)
  for name, v in (('alpha', alpha), ('beta', beta)):
    if v.shape != (m,):
      raise ConfigError(
        f'synthetic: {name} has shape {list(v.shape)}, expected [{m}] (m={m})'
      )
  return alpha, beta


def task_weights(
  *, p: float, c: float = 1.0, d: int = 100, seed: int = 0
) -> np.ndarray:
  """The task vectors [2, d]: w1 = c u1, w2 = c (p u1 + sqrt(1-p^2) u2)."""
  if not -1.0 <= p <= 1.0:
    raise ConfigError(f'synthetic: p is {p}, expected -1 <= p <= 1')
  if d < 2:
    raise ConfigError(f'synthetic: d is {d}, expected d >= 2')
  g1, g2 = _streams(seed)[0].standard_normal((2, d))
  # Gram-Schmidt: u2 is g2 without its u1 component.
  u1 = g1 / np.linalg.norm(g1)
  v = g2 - (g2 @ u1) * u1
  u2 = v / np.linalg.norm(v)
  return c * np.stack([u1, p * u1 + np.sqrt(1.0 - p * p) * u2])


def make_labels(
  x: np.ndarray,
  w: np.ndarray,
  *,
  alpha: np.ndarray,
  beta: np.ndarray,
  noise: np.ndarray,
) -> np.ndarray:
  """y [2, N] from x [N, d], w [2, d], alpha/beta [m] and noise [2, N]."""
  z = w @ x.T  # [2, N]
  y = z + noise
  for a, b in zip(alpha, beta, strict=True):  # m is small; keeps memory [2, N]
    y += np.sin(a * z + b)
  return y


def _split(rng, n, w, d, alpha, beta, noise_std) -> dict[str, np.ndarray]:
  x = rng.standard_normal((n, d))
  noise = noise_std * rng.standard_normal((2, n))
  y = make_labels(x, w, alpha=alpha, beta=beta, noise=noise).astype(np.float32)
  return {
    'dense': x.astype(np.float32),
    'sparse': np.zeros((n, 0), np.int32),
    'labels': y,
    'mask': np.ones_like(y),
  }


def _pearson(y: np.ndarray) -> float:
  return float(np.corrcoef(y)[0, 1])


def label_correlation(
  ps: Sequence[float],
  *,
  c: float = 1.0,
  m: int = 10,
  alpha: Sequence[float] | None = None,
  beta: Sequence[float] | None = None,
  d: int = 100,
  n: int = 10_000,
  noise_std: float = 0.1,
  seed: int = 0,
) -> np.ndarray:
  """Pearson correlation of (y1, y2) on n training rows, one per p (Fig. 2).

  Pure: the same arguments give the same curve, and every p uses the same
  u1, u2, x and noise, so the curve is smooth in p.
  """
  alpha, beta = _shape(m, alpha, beta)
  out = []
  for p in ps:
    w = task_weights(p=p, c=c, d=d, seed=seed)
    rng = _streams(seed)[SPLIT_STREAMS['train']]
    y = _split(rng, n, w, d, alpha, beta, noise_std)['labels']
    out.append(_pearson(y.astype(np.float64)))
  return np.asarray(out)


def load_synthetic(
  *,
  p: float = 0.5,
  c: float = 1.0,
  m: int = 10,
  alpha: Sequence[float] | None = None,
  beta: Sequence[float] | None = None,
  d: int = 100,
  n_train: int = 10_000,
  n_validation: int = 2_000,
  n_test: int = 2_000,
  noise_std: float = 0.1,
  seed: int = 0,
) -> Dataset:
  """Generates the two regression tasks 'y1', 'y2' with cos(w1, w2) = p.

  Args:
    p: task correlation, cos(w1, w2), in [-1, 1].
    c: scale of both task vectors.
    m: number of sine terms.
    alpha, beta: the m frequencies and phases; default alpha_i = i,
      beta_i = i^2.
    d: input dimension (the paper's 100).
    n_train, n_validation, n_test: rows per split (the paper does not give
      its sizes; Fig. 2 uses 10k points).
    noise_std: standard deviation of each task's Gaussian noise.
    seed: seed of the directions and all splits.

  Returns:
    A Dataset with dense = x [N, d] (x0..), no sparse features, labels
    [2, N] float32 and stats holding the row counts, cos(w1, w2), the label
    Pearson correlation per split, alpha and beta.
  """
  alpha, beta = _shape(m, alpha, beta)
  w = task_weights(p=p, c=c, d=d, seed=seed)
  streams = _streams(seed)
  sizes = {'train': n_train, 'validation': n_validation, 'test': n_test}
  splits = {
    s: _split(streams[SPLIT_STREAMS[s]], n, w, d, alpha, beta, noise_std)
    for s, n in sizes.items()
  }
  cosine = float(w[0] @ w[1] / np.linalg.norm(w[0]) / np.linalg.norm(w[1]))
  stats = {
    'rows': sizes,
    'cos_w1_w2': cosine,
    'label_pearson': {s: _pearson(a['labels']) for s, a in splits.items()},
    'alpha': alpha.tolist(),
    'beta': beta.tolist(),
    'noise_std': noise_std,
  }
  return Dataset(
    name='synthetic',
    tasks=(Task('y1', 'regression'), Task('y2', 'regression')),
    dense_names=tuple(f'x{i}' for i in range(d)),
    sparse_names=(),
    vocab_sizes=(),
    splits=splits,
    stats=stats,
  )
