"""Per-task gradients: what balancing methods and diagnostics look at.

The model's top-level params are `embed`, `backbone` and `towers` (DESIGN §3).
Gradient-space methods combine the per-task gradients of the shared params
(`shared_group`: the `backbone`, or `embed` for a model whose backbone is
task-specific, as ESMM's and AITM's are);
GradNorm takes norms on "the last shared layer", found here by name: the
kernel of the last Dense layer of the shared network, i.e.

  shared_bottom  backbone/mlp/Dense_<last>/kernel
  mmoe, omoe     backbone/experts/mlp/Dense_<last>/kernel   [E, H_in, H]
  cgc, ple       backbone/level_<last>/shared_experts/mlp/Dense_<last>/kernel
  esmm, aitm     embed/table  (they share only the embeddings)

A model that shares nothing (single_task: per-task tables) has no such layer.
"""

import re

import jax
import jax.numpy as jnp

# Path parts of backbone params that belong to one task only.
_TASK_SPECIFIC = ('specific_experts', 'task_gates', 'networks')


def _key_name(k) -> str:
  return str(getattr(k, 'key', getattr(k, 'name', k)))


def _sort_key(path: tuple[str, ...]):
  # level_10 after level_9, Dense_10 after Dense_9.
  return [
    (int(m[1]), p) if (m := re.fullmatch(r'\D+_(\d+)', p)) else (-1, p)
    for p in path
  ]


def last_shared_kernel_path(params) -> tuple[str, ...]:
  """The path of the last shared layer's kernel in `params`.

  Raises:
    ValueError: the model has no shared layer (e.g. single_task).
  """
  candidates = []
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = tuple(_key_name(k) for k in path)
    if (
      names[0] == 'backbone'
      and names[-1] == 'kernel'
      and 'mlp' in names
      and not any(part in names for part in _TASK_SPECIFIC)
    ):
      candidates.append(names)
  if not candidates:
    # Models that share only the embedding (ESMM, AITM): the table is the
    # last (and only) shared layer. A per-task table [T, V, d] is not shared.
    table = params.get('embed', {}).get('table')
    if table is not None and table.ndim == 2:
      return ('embed', 'table')
    raise ValueError(
      'the model has no shared layer (no backbone/.../mlp/.../kernel outside '
      'task-specific parts); GradNorm needs one: use a model that shares '
      'parameters (shared_bottom, omoe, mmoe, cgc, ple)'
    )
  return max(candidates, key=_sort_key)


def shared_group(model) -> str:
  """The top-level params the tasks share: 'backbone' unless the
  backbone says otherwise (`shared_params`, e.g. 'embed')."""
  return getattr(getattr(model, 'backbone', None), 'shared_params', 'backbone')


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
