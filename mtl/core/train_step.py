"""The pure train and eval steps (docs/ARCHITECTURE.md §5).

`step(state, batch) -> (state, metrics)` does one forward and one backward:

1. `losses [T], vjp_fn = jax.vjp(task_losses, params)`;
2. when the weighting method asks (`needs`), per-task gradients
   `vjp_fn(e_t)` for each task t, stacked [T, ...], of the param groups it
   reads only (GradNorm: the group of the last shared layer; the Gram matrix
   and gradient-space methods: the shared group; MoDo and SDMGrad: also of
   each of three parts of the batch, `batch_parts`);
3. the weighting method turns these into weights [T], updating its state;
4. `grads = vjp_fn(stop_gradient(weights))`: the gradient of sum_t w_t L_t,
   where a group with per-task gradients takes sum_t w_t g_t of them instead
   (XLA drops that part of the pass); for a gradient-space method
   (`combines_gradients`) the shared group takes sum_t c_t g_t with its
   coefficients c and the rest the base-weighted pass; for one that returns
   the combined vector (`combines_gradients='vector'`, needing `task_grads`)
   the shared group takes that vector and the rest the pass weighted with
   the weights it returns beside it;
5. the optax update; or, with sparse embedding tables (`tx` a
   sparse_train.SparseTables, chosen by config.optimizer.sparse), optax on
   the other params and the sparse optimizer on the looked-up rows: the vjp
   is then taken w.r.t. (the other params, zero perturbations of the
   gathered rows), the tables closed over, so no [V, d] gradient is formed
   (mtl/core/sparse_train.py). Per-task gradients of a sparse table are its
   per-task row gradients, combined per task for norms and Gram matrices.

Written per shard: with `axis_name` set, each shard's loss is its masked sum
over the *global* row count (`psum` of counts), so `psum` of losses and
gradients gives exactly the full-batch quantities, whatever the split of masked
rows across devices. With `axis_name=None` no collective is used.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from mtl.core import batch_parts, sharded_tables, sparse_train
from mtl.core import losses as losses_lib
from mtl.core import metrics as metrics_lib
from mtl.core import task_grads as task_grads_lib
from mtl.core import tasks as tasks_lib
from mtl.core.architectures.base import training_logits
from mtl.core.tasks import Task
from mtl.core.train_state import TrainState
from mtl.core.weighting.base import KNOWN_NEEDS, VECTOR, VECTOR_NEEDS
from mtl.errors import ConfigError


def _psum(x, axis_name):
  return x if axis_name is None else lax.psum(x, axis_name)


def features_of(batch):
  return {'dense': batch['dense'], 'sparse': batch['sparse']}


def _unit_distances(per_task, shared, sp):
  """[T, T] ||u_i - u_j||^2 of the shared group's unit task gradients, its
  sparse tables' (combined) rows included (`task_grads.unit_distances`)."""
  model, sparse_ids, task_rows, part, axis_name = sp
  gram = sparse_train.task_gram(per_task, shared, *sp)
  norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))
  rows = None
  if task_rows is not None and shared == sparse_train.EMBED:

    def rows(pairs):
      mixed = jax.tree.map(lambda r: jnp.tensordot(pairs, r, 1), task_rows)
      return sparse_train.task_rows_squares(
        model, sparse_ids, mixed, part.tables, axis_name, part.sharded
      )

  return task_grads_lib.unit_distances(per_task[shared], norms, rows)


def make_train_step(
  model,
  tx: optax.GradientTransformation,
  weighting,
  tasks: tuple[Task, ...],
  *,
  steps_per_epoch: int,
  axis_name: str | None = None,
  skip_nonfinite: bool = False,
):
  """Builds the pure train step; `steps_per_epoch` defines `epoch`.

  With `skip_nonfinite` (`tx` wrapped in `optax.apply_if_finite`), a step
  whose losses or gradients are not finite leaves the weighting state as it
  was too, and the metrics count it ('nonfinite': 1 for that step).
  """
  # The step trains the trained tasks only, each on its model output row;
  # metric-only tasks (train=False) are left to the eval step.
  rows = np.asarray(tasks_lib.train_rows(tasks))
  out_rows = np.asarray(tasks_lib.head_rows(tasks))[rows]
  identity = list(rows) == list(out_rows) == list(range(len(tasks)))
  tasks = tasks_lib.trained(tasks)
  shared = task_grads_lib.shared_group(model)
  base_weights = jnp.asarray([t.weight for t in tasks], jnp.float32)
  num_tasks = len(tasks)
  needs = frozenset(weighting.needs)
  unknown = needs - KNOWN_NEEDS
  if unknown:
    raise ValueError(
      f'weighting method needs {sorted(unknown)}, which the train step does '
      f'not provide; known: {sorted(KNOWN_NEEDS)}'
    )
  combines = bool(weighting.combines_gradients)
  vector = weighting.combines_gradients == VECTOR
  if vector and not needs & VECTOR_NEEDS:
    raise ValueError(
      "a weighting method whose combines_gradients is 'vector' needs "
      "'task_grads' or 'task_grads_parts'"
    )
  want_task_grads = combines or bool(needs)
  part = tx if isinstance(tx, sparse_train.SparseTables) else None
  if (
    needs & VECTOR_NEEDS
    and part
    and part.tables
    and shared == sparse_train.EMBED
  ):
    raise ConfigError(
      f'the weighting method needs the per-task gradients of the shared '
      f'{shared!r} params as vectors, which sparse embedding tables '
      f'({", ".join(sorted(part.tables))}) never form; leave '
      'optimizer.sparse empty'
    )

  def task_losses(variables, batch, rng, parts=False):
    # Per-example terms: AITM's of the logits, DSelect-k's sown ones.
    logits, extra = training_logits(model, variables, features_of(batch), rng)
    if extra is not None:
      extra = extra[out_rows]
    if not identity:
      logits = logits[out_rows]
      labels, mask = batch['labels'][rows], batch['mask'][rows]
    else:
      labels, mask = batch['labels'], batch['mask']
    weight = batch.get('weight')  # [B] per-example weights (bagging), or None
    if parts:  # [K, T]: each part's losses (`batch_parts`)
      masks = batch_parts.part_masks(mask, axis_name)
      return jnp.stack(
        [mean_losses(logits, labels, m, extra, weight) for m in masks]
      )
    return mean_losses(logits, labels, mask, extra, weight)

  def mean_losses(logits, labels, mask, extra, weight):
    sums, counts = losses_lib.masked_loss_sums(
      logits, labels, mask, tasks=tasks, extra=extra, weights=weight
    )
    counts = _psum(counts, axis_name)
    return sums / jnp.maximum(counts, 1.0)

  def part_grads(variables, primal, batch, rng):
    """[K, T, P] the shared params' per-task gradients of each part."""
    k = batch_parts.NUM_PARTS
    _, vjp_fn = jax.vjp(
      lambda p: task_losses(variables(p), batch, rng, True).reshape(-1), primal
    )
    if part is not None:
      vjp_fn = sparse_train.one_tree(vjp_fn)
    grads = task_grads_lib.per_task(vjp_fn, k * num_tasks, [shared])
    flat = task_grads_lib.flat(_psum(grads, axis_name))
    return flat.reshape(k, num_tasks, -1)

  def step(state: TrainState, batch, hparams=None):
    """One step; `hparams` holds a population member's own values.

    hparams (optional, `mtl.core.population`): 'task_weights' [T] multiply the
    base weights, 'lr_scale' () multiplies the optimizer's updates, and
    'member' () is passed to the weighting method's update.
    """
    base, member_kw = base_weights, {}
    if hparams is not None:
      base = base_weights * hparams['task_weights']
      member_kw = {'member': hparams['member']}
    rng = jax.random.fold_in(state.rng, state.step)
    primal, variables = sparse_train.differentiable(
      part, model, state.params, batch['sparse'], axis_name
    )
    local_losses, vjp_fn = jax.vjp(
      lambda p: task_losses(variables(p), batch, rng), primal
    )
    if part is not None:  # One tree: the rows' gradients under ROWS.
      vjp_fn = sparse_train.one_tree(vjp_fn)
    losses = _psum(local_losses, axis_name)
    extra, task_rows = {}, None
    rows_of = lambda g: sparse_train.pop_rows(g, part)  # noqa: E731
    if want_task_grads:
      gram_needs = {'task_grad_gram', 'task_grad_unit_distances', 'task_grads'}
      groups = {shared} if combines or needs & gram_needs else set()
      if 'task_grad_norms' in needs:
        path = task_grads_lib.gradnorm_path(model, state.params)
        groups.add(path[0])
      if part is not None and sparse_train.EMBED in groups:
        groups.add(sparse_train.ROWS)
      per_task, task_rows = rows_of(
        task_grads_lib.per_task(vjp_fn, num_tasks, sorted(groups))
      )
      per_task = _psum(per_task, axis_name)
      sp = (model, batch['sparse'], task_rows, part, axis_name)
      if 'task_grad_norms' in needs:
        extra['task_grad_norms'] = sparse_train.task_norms(per_task, path, *sp)
      if 'task_grad_gram' in needs:
        extra['task_grad_gram'] = sparse_train.task_gram(per_task, shared, *sp)
      if 'task_grad_unit_distances' in needs:
        e = _unit_distances(per_task, shared, sp)
        extra['task_grad_unit_distances'] = e
      if 'task_grads' in needs:
        extra['task_grads'] = task_grads_lib.flat(per_task[shared])
      if 'task_grads_parts' in needs:
        extra['task_grads_parts'] = part_grads(variables, primal, batch, rng)
    weights, weighting_state = weighting.update(
      base,
      state.weighting_state,
      losses=losses,
      step=state.step,
      epoch=state.step // steps_per_epoch,
      **extra,
      **member_kw,
    )
    weights = lax.stop_gradient(weights)
    if vector:  # Combined(weights of the other groups, the shared gradient)
      weights, shared_grad = weights
    if want_task_grads:
      # The groups with per-task gradients take sum_t c_t g_t of them (c the
      # method's coefficients for the shared group of a gradient-space
      # method, else the weights); the other groups come from ONE more
      # backward pass, weighted (base weights beside a gradient-space
      # method): XLA drops from it what the per-task gradients already gave.
      # On census MMoE (T=2) GradNorm's step took 8.5 ms so against 9.8 ms
      # with every group's per-task gradients (equal weighting: 5.6 ms).
      rest = base if combines and not vector else weights
      grads, row_grads = rows_of(vjp_fn(rest)[0])
      grads = dict(_psum(grads, axis_name))
      coefficient = lambda n: weights if n == shared else rest  # noqa: E731
      for name, sub in per_task.items():
        if vector and name == shared:
          grads[name] = task_grads_lib.unflat(shared_grad, sub)
        else:
          grads[name] = task_grads_lib.combine(sub, coefficient(name))
      if task_rows is not None:
        c = coefficient(sparse_train.EMBED)
        row_grads = task_grads_lib.combine(task_rows, c)
    else:
      grads, row_grads = rows_of(vjp_fn(weights)[0])
      grads = _psum(grads, axis_name)
    if part is not None:  # optax on the dense params, sparse on the tables.
      new_params, opt_state, finite = sparse_train.apply_updates(
        part,
        model,
        state.params,
        state.opt_state,
        grads,
        row_grads,
        batch['sparse'],
        step=state.step,
        axis_name=axis_name,
        scale=None if hparams is None else hparams['lr_scale'],
        losses=losses,
        skip_nonfinite=skip_nonfinite,
      )
    else:
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      if hparams is not None:
        updates = jax.tree.map(lambda u: u * hparams['lr_scale'], updates)
      new_params = optax.apply_updates(state.params, updates)
      if skip_nonfinite:
        # apply_if_finite judged the gradients (and zeroed the update); a
        # non-finite loss with finite gradients is skipped here too.
        finite = opt_state.last_finite & jnp.isfinite(losses).all()
        new_params = jax.tree.map(
          lambda new, old: jnp.where(finite, new, old),
          new_params,
          state.params,
        )
    if skip_nonfinite:
      weighting_state = jax.tree.map(
        lambda new, old: jnp.where(finite, new, old),
        weighting_state,
        state.weighting_state,
      )
    new_state = TrainState(
      step=state.step + 1,
      params=new_params,
      opt_state=opt_state,
      weighting_state=weighting_state,
      rng=state.rng,
    )
    metrics = {
      'loss': losses,
      'weight': weights,
      'total_loss': jnp.dot(weights, losses),
    }
    if skip_nonfinite:
      metrics['nonfinite'] = (~finite).astype(jnp.int32)
    return new_state, metrics

  return step


def make_eval_step(
  model,
  tasks: tuple[Task, ...],
  *,
  num_bins: int = metrics_lib.DEFAULT_BINS,
  axis_name: str | None = None,
  sharded: tuple = (),
):
  """Builds `eval_step(params, batch) -> counts`, summable over batches.

  sharded: embedding tables sharded by rows over `axis_name`, whose params
  are this device's blocks (mtl/core/sharded_tables.py).
  """

  out_rows = np.asarray(tasks_lib.head_rows(tasks))
  identity = list(out_rows) == list(range(len(tasks)))

  def eval_step(params, batch):
    variables = sharded_tables.variables(
      model, params, batch['sparse'], sharded, axis_name
    )
    logits = model.apply(variables, features_of(batch), train=False)
    if not identity:
      logits = logits[out_rows]  # Each task scored on its model output.
    loss_sum, count = losses_lib.masked_loss_sums(
      logits, batch['labels'], batch['mask'], tasks=tasks, metric=True
    )
    pos, neg = metrics_lib.auc_counts(
      logits, batch['labels'], batch['mask'], num_bins=num_bins
    )
    counts = {'loss_sum': loss_sum, 'count': count, 'pos': pos, 'neg': neg}
    return jax.tree.map(lambda x: _psum(x, axis_name), counts)

  return eval_step


def gather_rows(data, idx):
  """Rows `idx` of a split in batch layout (labels and mask are [T, N])."""
  return {
    'dense': jnp.take(data['dense'], idx, axis=0),
    'sparse': jnp.take(data['sparse'], idx, axis=0),
    'labels': jnp.take(data['labels'], idx, axis=1),
    'mask': jnp.take(data['mask'], idx, axis=1),
  }


def make_scanned_steps(step, *, batch_size: int, num_steps: int):
  """`num_steps` train steps in one dispatch over device-resident data.

  Returns `run(state, data, perm, first_batch) -> (state, metrics [K, ...])`
  where batch k takes rows `perm[(first_batch + k) * batch_size : ...]`: the
  shuffle is a device array computed once per epoch, so the order is the same
  pure function of (seed, epoch) as in the host-batch mode.
  """

  def run(state, data, perm, first_batch):
    def body(state, k):
      start = (first_batch + k) * batch_size
      idx = lax.dynamic_slice_in_dim(perm, start, batch_size)
      return step(state, gather_rows(data, idx))

    return lax.scan(body, state, jnp.arange(num_steps))

  return run


def make_scanned_eval(eval_step, *, batch_size: int):
  """`run(params, data, total=None) -> summed counts` over a split padded
  to batches, batch after batch.

  `total` carries the counts of the batches before `data` (a split read in
  chunks, mtl/data/streaming.py): the sum then runs in the same order as
  over the whole split at once, so both give the same bits. None: zeros
  (x + 0.0 is x).
  """

  def run(params, data, total=None):
    n = data['labels'].shape[1]
    if n % batch_size:
      raise ValueError(f'eval data of {n} rows is not padded to {batch_size}')

    def batch(k):
      idx = k * batch_size + jnp.arange(batch_size)
      return eval_step(params, gather_rows(data, idx))

    def body(total, k):
      return jax.tree.map(jnp.add, total, batch(k)), None

    if total is None:
      shapes = jax.eval_shape(batch, 0)
      total = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    total, _ = lax.scan(body, total, jnp.arange(n // batch_size))
    return total

  return run
