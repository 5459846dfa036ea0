"""Per-task gradients: what balancing methods and diagnostics look at.

The model's top-level params are `embed`, `backbone` and `towers` (and,
when enabled, `wide`, per tower like the towers, and `interaction`, shared
like the embeddings: neither is a shared group, so both take the weighted
sum of the task gradients).
Gradient-space methods combine the per-task gradients of the shared params
(`shared_group`: the architecture's `shared_params`, the `backbone`, or
`embed` for a model whose backbone is task-specific, as ESMM's and AITM's
are). GradNorm takes norms on "the last shared layer", which the
architecture declares (`Architecture.gradnorm_layer`): e.g.

  shared_bottom  backbone/mlp/Dense_<last>/kernel
  mmoe, omoe     backbone/experts/mlp/Dense_<last>/kernel   [E, H_in, H]
  cgc, ple       backbone/level_<last>/shared_experts/mlp/Dense_<last>/kernel
  esmm, aitm     embed/table  (they share only the embeddings)

A model that shares nothing (single_task: per-task tables) declares none.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from mtl.errors import ConfigError


def gradnorm_path(model, params=None) -> tuple[str, ...]:
  """The params path of the model's last shared layer's kernel.

  Raises:
    ConfigError: the architecture shares no layer (e.g. single_task).
    ValueError: it declares a path that `params` do not have (a bug in the
      architecture's `gradnorm_layer`).
  """
  backbone = model.backbone
  path = backbone.gradnorm_layer()
  if path is None:
    raise ConfigError(
      f'model {type(backbone).__name__} shares no layer between tasks; '
      'GradNorm needs one: use a model that shares parameters '
      '(shared_bottom, omoe, mmoe, cgc, ple, esmm, aitm)'
    )
  if params is not None:
    node = params
    for i, name in enumerate(path):
      if not isinstance(node, dict) or name not in node:
        raise ValueError(
          f'{type(backbone).__name__}.gradnorm_layer() is {"/".join(path)}, '
          f'but the params have no {"/".join(path[: i + 1])}'
        )
      node = node[name]
  return tuple(path)


def shared_group(model) -> str:
  """The top-level params the tasks share (`Architecture.shared_params`)."""
  return model.backbone.shared_params


def shared_size(model, params) -> int:
  """P, the number of shared params (`shared_group`) of one model's params
  (0 when the group has none)."""
  group = params.get(shared_group(model), {})
  return sum(x.size for x in jax.tree.leaves(group))


def get_path(tree, path: tuple[str, ...]):
  for name in path:
    tree = tree[name]
  return tree


def per_task(vjp_fn, num_tasks: int, groups=None):
  """Per-task gradients [T, ...] from the vjp of the task losses [T].

  `groups` (top-level param names) keeps only those: what a caller never
  reads is dead code XLA removes, so leaving out `embed` saves, per task, the
  backward matmul into the embeddings and the scatter into the table.
  One vjp per task, unrolled, then stacked: XLA CPU ran `vmap(vjp_fn)(eye(T))`
  1.45x slower on census MMoE (15.1 vs 10.5 ms for T=2, the batched dots get
  a worse layout).
  """
  eye = jnp.eye(num_tasks, dtype=jnp.float32)
  grads = [vjp_fn(eye[t])[0] for t in range(num_tasks)]
  if groups is not None:
    grads = [{k: g[k] for k in groups} for g in grads]
  return jax.tree.map(lambda *g: jnp.stack(g), *grads)


def norms_at(task_grads, path: tuple[str, ...]) -> jnp.ndarray:
  """[T] Euclidean norms of the per-task gradients [T, ...] of one leaf."""
  g = get_path(task_grads, path)
  return jnp.sqrt(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1))


def gram(task_grads) -> jnp.ndarray:
  """[T, T] Gram matrix <g_i, g_j> of per-task gradient trees [T, ...]."""
  leaves = jax.tree.leaves(task_grads)
  t = leaves[0].shape[0]
  flat = [x.reshape(t, -1).astype(jnp.float32) for x in leaves]
  return sum(f @ f.T for f in flat)


def flat(task_grads) -> jnp.ndarray:
  """[T, P] float32: per-task gradient trees [T, ...] as vectors, each leaf
  flattened row-major, the leaves in jax.tree order."""
  leaves = jax.tree.leaves(task_grads)
  t = leaves[0].shape[0]
  return jnp.concatenate(
    [x.reshape(t, -1).astype(jnp.float32) for x in leaves], axis=1
  )


def unflat(vector: jnp.ndarray, like):
  """The inverse of `flat` for one vector [P]: a tree of one task's
  gradient, shaped (and typed) like the trees `like` [T, ...]."""
  leaves, treedef = jax.tree.flatten(like)
  out, start = [], 0
  for x in leaves:
    size = math.prod(x.shape[1:])
    part = vector[start : start + size].reshape(x.shape[1:])
    out.append(part.astype(x.dtype))
    start += size
  return jax.tree.unflatten(treedef, out)


def pair_matrix(norms: jnp.ndarray) -> jnp.ndarray:
  """[T (T - 1) / 2, T]: row (i, j), i < j, is e_i / n_i - e_j / n_j (a zero
  gradient's 1 / n taken as 0), so it maps gradients to u_i - u_j."""
  t = norms.shape[0]
  i, j = np.triu_indices(t, 1)
  inverse = jnp.where(norms > 0, 1.0 / jnp.where(norms > 0, norms, 1.0), 0.0)
  eye = jnp.eye(t, dtype=jnp.float32)
  return eye[i] * inverse[i, None] - eye[j] * inverse[j, None]


def unit_distances(task_grads, norms: jnp.ndarray, extra=None) -> jnp.ndarray:
  """[T, T] ||u_i - u_j||^2, u_t = g_t / ||g_t|| (0 for a zero gradient),
  from the per-task gradient trees [T, ...] themselves.

  1 - cos_ij from a float32 Gram matrix is known to ~1e-7 only; formed from
  the gradients, ||u_i - u_j||^2 keeps float32's relative precision however
  close the directions (IMTL-G's input). `extra(pairs)` adds the squared
  norms of parts the trees do not hold (sparse rows), given `pair_matrix`.
  """
  t = norms.shape[0]
  pairs = pair_matrix(norms)
  sq = sum(
    jnp.sum(jnp.square(jnp.tensordot(pairs, x.reshape(t, -1), 1)), axis=1)
    for x in jax.tree.leaves(task_grads)
  )
  if extra is not None:
    sq = sq + extra(pairs)
  i, j = np.triu_indices(t, 1)
  out = jnp.zeros((t, t), jnp.float32).at[i, j].set(sq)
  return out + out.T


def cosines(g: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """Pairwise cosine similarities [T, T] from a Gram matrix."""
  n = jnp.sqrt(jnp.maximum(jnp.diag(g), 0.0))
  return g / jnp.maximum(n[:, None] * n[None, :], eps)


def combine(task_grads, coefficients: jnp.ndarray):
  """sum_t c_t g_t of per-task gradient trees [T, ...]."""
  return jax.tree.map(
    lambda g: jnp.tensordot(coefficients.astype(g.dtype), g, axes=1),
    task_grads,
  )
