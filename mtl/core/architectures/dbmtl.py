"""DBMTL: task towers linked as a Bayesian network over the targets.

Wang, Ji, Liu, Zhao, "Deep Bayesian Multi-Target Learning for Recommender
Systems", arXiv 1902.09154, 2019 (Alibaba, Taobao live streaming). Instead
of independent targets, p(t_1, ..., t_T | x) = prod_t p(t | x, parents(t))
(Bayes' chain rule over a network of the targets). The network (Sec. 3):
a shared embedding, a shared layer, a specific layer per target, then the
Bayesian layer, where target t's function f_t, an MLP, reads its own
specific representation concatenated with the representations f_p of its
parents and returns target t's representation; one more layer (mtl's
tower) turns that into t's output:

  h    = MLP_shared(x)                        [B, H_b]
  s_t  = MLP_t(h)                             [B, H_s]
  f_t  = MLP_rel_t([s_t, f_p1, ..., f_pj])    [B, H_r], p in parents(t)
  z[t] = f_t                                  -> z [T, B, H_r]

The tasks are visited in a topological order of the parents, so a parent's
f_p exists when its children read it. `dependencies` lists (task, parent)
pairs of task indices (the dataset's task order); unset, task t depends on
every earlier task, Bayes' chain rule in task order as in the paper. A
cycle, a task out of range or a task its own parent is one ConfigError.

Params: 'bottom' (MLP), 'specific' (ExpertBank, one MLP per task,
[T, ...]), 'relation_{t}' (MLP per task: their input widths differ).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl.core.architectures.base import Backbone, dense_kernel
from mtl.core.layers.experts import ExpertBank
from mtl.core.layers.mlp import MLP
from mtl.errors import ConfigError


def parents_of(num_tasks: int, dependencies) -> tuple[tuple[int, ...], ...]:
  """Each task's parents, sorted; `dependencies` None: every earlier task.
  Raises a one-line ConfigError naming model.dependencies otherwise."""
  if dependencies is None:
    return tuple(tuple(range(t)) for t in range(num_tasks))
  parents = [set() for _ in range(num_tasks)]
  for pair in dependencies:
    ok = (
      isinstance(pair, tuple | list)
      and len(pair) == 2
      and all(isinstance(i, int) and not isinstance(i, bool) for i in pair)
    )
    if not ok:
      raise ConfigError(
        f'model.dependencies has {pair!r}, expected (task, parent) pairs of '
        'task indices'
      )
    task, parent = pair
    if not (0 <= task < num_tasks and 0 <= parent < num_tasks):
      raise ConfigError(
        f'model.dependencies has {tuple(pair)!r}, expected task indices in '
        f'[0, {num_tasks - 1}] ({num_tasks} tasks)'
      )
    if task == parent:
      raise ConfigError(
        f'model.dependencies has {tuple(pair)!r}, expected a task other than '
        'its own parent'
      )
    parents[task].add(parent)
  parents = tuple(tuple(sorted(p)) for p in parents)
  topological_order(parents)  # A cycle is an error.
  return parents


def topological_order(parents) -> tuple[int, ...]:
  """Tasks with every parent before its children (ties: lowest index
  first); a cycle is a ConfigError naming its tasks."""
  done, order = set(), []
  while len(order) < len(parents):
    ready = [
      t
      for t in range(len(parents))
      if t not in done and all(p in done for p in parents[t])
    ]
    if not ready:
      cycle = sorted(set(range(len(parents))) - done)
      raise ConfigError(
        f'model.dependencies has a cycle among tasks {cycle}, expected an '
        'acyclic network of targets'
      )
    done.add(ready[0])
    order.append(ready[0])
  return tuple(order)


class DBMTL(Backbone):
  """Shared bottom, specific layers, Bayesian layer: x [B, D] -> [T, B, H_r].

  Attributes:
    num_tasks: T.
    dependencies: (task, parent) pairs of task indices; None (the
      default): each task depends on every earlier one.
    bottom_hidden: the shared layer's widths.
    task_hidden: each target's specific layer widths (H_s).
    relation_hidden: each target's Bayesian-layer MLP widths (H_r =
      relation_hidden[-1]).
    dropout: drop rate after each hidden layer.
  """

  num_tasks: int
  dependencies: tuple[tuple[int, int], ...] | None = None
  bottom_hidden: tuple[int, ...] = (128,)
  task_hidden: tuple[int, ...] = (64,)
  relation_hidden: tuple[int, ...] = (32,)
  dropout: float = 0.0

  def __post_init__(self):
    parents_of(self.num_tasks, self.dependencies)  # One-line errors now.
    if self.dependencies is not None:  # Config lists -> hashable tuples.
      pairs = tuple(tuple(pair) for pair in self.dependencies)
      object.__setattr__(self, 'dependencies', pairs)
    super().__post_init__()

  def gradnorm_layer(self) -> tuple[str, ...]:
    """The shared layer's last kernel."""
    return dense_kernel('bottom', num_layers=len(self.bottom_hidden))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x [B, D] -> z [T, B, H_r]."""
    parents = parents_of(self.num_tasks, self.dependencies)
    h = MLP(self.bottom_hidden, self.dropout, name='bottom')(x, train=train)
    s = ExpertBank(
      self.num_tasks, self.task_hidden, self.dropout, name='specific'
    )(h, train=train)  # [T, B, H_s]
    f = {}
    for t in topological_order(parents):
      inputs = jnp.concatenate([s[t], *(f[p] for p in parents[t])], axis=-1)
      f[t] = MLP(self.relation_hidden, self.dropout, name=f'relation_{t}')(
        inputs, train=train
      )
    return jnp.stack([f[t] for t in range(self.num_tasks)])
