"""A checkpoint's integrity (shell code): the sha256 of every saved array
and the check that a saved tree fits the model, each problem one line.

Used by mtl.shell.checkpoint: the checksums are taken from the host copy
of the state when a save starts and verified after a restore; a tree of
another model is a CheckpointError naming the first leaf that differs.
"""

import hashlib

import jax
import numpy as np

from mtl.errors import CheckpointError


def _path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ('name', 'key', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return '/'.join(parts)


def _shapes(tree) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_path_str(p): tuple(x.shape) for p, x in leaves}


def _host_bytes(x) -> np.ndarray | None:
  """The leaf's values on this host, None if no process holds all of them."""
  if isinstance(x, jax.Array):
    if x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return None  # Sharded over processes: not verified.
  return np.asarray(x)


def _row_blocks(x) -> list | None:
  """The data of a fully addressable array split on its first axis only
  (an embedding table split by rows), one block per row range in order; None
  for any other array."""
  if not (
    isinstance(x, jax.Array)
    and x.ndim
    and x.is_fully_addressable
    and not x.is_fully_replicated
  ):
    return None
  blocks = {}
  for shard in x.addressable_shards:
    first, *rest = shard.index
    if any(r != slice(None) for r in rest):
      return None
    blocks.setdefault(first.start or 0, shard)
  return [blocks[k].data for k in sorted(blocks)]


def _leaf_checksum(x) -> str | None:
  """sha256 of the leaf's bytes in C order; a table split by rows is hashed
  block by block (the same digest), never gathered into one host array."""
  blocks = _row_blocks(x)
  if blocks is not None:
    digest = hashlib.sha256()
    for block in blocks:
      flat = np.ascontiguousarray(np.asarray(block)).reshape(-1)
      digest.update(flat.view(np.uint8).data)
    return f'{np.dtype(x.dtype)}:{digest.hexdigest()}'
  host = _host_bytes(x)
  if host is None:
    return None
  flat = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
  return f'{host.dtype}:{hashlib.sha256(flat.data).hexdigest()}'


def checksums(tree) -> dict[str, str | None]:
  """{leaf path: "<dtype>:<sha256 of its bytes>"} of an on-disk tree."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_path_str(p): _leaf_checksum(x) for p, x in leaves}


def verify_checksums(tree, saved: dict) -> str | None:
  """The first problem of a restored on-disk tree against `saved`, or None.

  A leaf whose dtype differs from the saved one (orbax cast it on restore)
  or whose checksum was not taken (sharded over processes) is not checked.
  """
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    want = saved.get(_path_str(path))
    if want is None:
      continue
    if str(np.dtype(x.dtype)) != want.split(':')[0]:
      continue
    got = _leaf_checksum(x)
    if got is None:
      continue
    if got != want:
      return (
        f'sha256 mismatch in {_path_str(path)} (saved '
        f'{want.split(":")[1][:12]}..., read {got.split(":")[1][:12]}...)'
      )
  return None


def check_compatible(saved_tree, abstract_tree, *, directory, step) -> None:
  """Raises a one-line CheckpointError at the first leaf that does not match.

  Args:
    saved_tree: the checkpoint's tree metadata (leaves have `.shape`).
    abstract_tree: what the caller expects (on-disk form, `typed_keys.to_disk`).
    directory: named in the message.
    step: named in the message.
  """
  found, expected = _shapes(saved_tree), _shapes(abstract_tree)
  problem = None
  for path, shape in expected.items():
    if path not in found:
      problem = f'{path} is missing (expected shape {shape})'
    elif found[path] != shape:
      problem = f'{path} has shape {found[path]}, expected {shape}'
    if problem:
      break
  else:
    extra = [p for p in found if p not in expected]
    if extra:
      problem = f'{extra[0]} (shape {found[extra[0]]}) is not in the model'
  if problem:
    raise CheckpointError(
      f'checkpoint {directory} step {step} does not match the model: {problem}'
    )
