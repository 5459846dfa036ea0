"""From a Dataset split (numpy) to batches: shuffling, padding, placement.

The training order is a pure function of (data key, epoch): a permutation of
the split's rows drawn with `jax.random.permutation(fold_in(key, epoch), N)`
up to LARGE_SPLIT rows; above it (data beyond memory, input_mode 'stream'),
numpy's in-place Fisher-Yates shuffle seeded with that key's bits. Both are
uniform permutations; the second needs 4 bytes a row where jax's sort-based
shuffle peaked at 2.1 GB more than that for 50M rows (measured,
experiments/scale_streaming.py), which broke the streaming memory goal.
Each epoch takes the first `N // batch_size` full batches of its permutation
(static shapes, no recompiles); the few rows left over differ every epoch.
The same permutation feeds host batches and device-resident scanned steps, so
both modes train on the same batches in the same order.
"""

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mtl.errors import ConfigError

Split = dict[str, np.ndarray]


def steps_per_epoch(num_rows: int, batch_size: int) -> int:
  if batch_size <= 0:
    raise ConfigError(f'batch_size is {batch_size}, expected a positive int')
  if batch_size > num_rows:
    raise ConfigError(
      f'batch_size {batch_size} exceeds the {num_rows} training rows'
    )
  return num_rows // batch_size


@jax.jit
def _permutation(key, epoch, n_template):
  return jax.random.permutation(
    jax.random.fold_in(key, epoch), n_template.shape[0]
  )


# Splits above this many rows are shuffled by numpy, in place (see above).
LARGE_SPLIT = 1 << 24


def epoch_permutation(key, epoch: int, num_rows: int) -> jax.Array | np.ndarray:
  """The row order of `epoch`: int32 [num_rows].

  On the default device up to LARGE_SPLIT rows; a numpy array above it.
  """
  if num_rows > LARGE_SPLIT:
    bits = jax.random.key_data(jax.random.fold_in(key, epoch))
    perm = np.arange(num_rows, dtype=np.int32)
    np.random.default_rng(np.asarray(bits, np.uint32).ravel()).shuffle(perm)
    return perm
  # The template array carries N as a static shape without a Python int arg.
  return _permutation(key, epoch, jnp.zeros((num_rows,), jnp.int8))


def take_rows(split: Split, idx: np.ndarray) -> Split:
  """Numpy rows `idx` of a split in batch layout."""
  return {
    'dense': split['dense'][idx],
    'sparse': split['sparse'][idx],
    'labels': split['labels'][:, idx],
    'mask': split['mask'][:, idx],
  }


def host_batches(
  split: Split, perm: np.ndarray, batch_size: int, first_batch: int = 0
) -> Iterator[Split]:
  """Numpy batches of a split in the order `perm`, full batches only."""
  for b in range(first_batch, len(perm) // batch_size):
    yield take_rows(split, perm[b * batch_size : (b + 1) * batch_size])


def pad_split(split: Split, multiple: int) -> Split:
  """Pads rows up to a multiple of `multiple`; padded rows have mask 0."""
  n = split['labels'].shape[1]
  extra = (-n) % multiple
  if not extra:
    return split
  return {
    'dense': np.pad(split['dense'], ((0, extra), (0, 0))),
    'sparse': np.pad(split['sparse'], ((0, extra), (0, 0))),
    'labels': np.pad(split['labels'], ((0, 0), (0, extra))),
    'mask': np.pad(split['mask'], ((0, 0), (0, extra))),
  }
