"""What researchers look at besides the losses, logged every N steps.

On one batch (the first of the current epoch's order), with dropout off:

  diag/grad_norm/<task>          ||g_t||, g_t the gradient of task t's loss
                                 with respect to the shared backbone
  diag/grad_cos/<a>~<b>          cosine between g_a and g_b: negative values
                                 are gradient conflict (Yu et al. 2020)
  diag/gate/<level>/<task>/<e>   mean gate weight of task t on expert e, the
                                 experts' utilisation (MoE models; <level> is
                                 the name of the module that sowed the gates)

The compiled part (`make_diagnostics`) is pure; `summarize` names the numbers.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mtl.core import losses as losses_lib
from mtl.core import task_grads as task_grads_lib
from mtl.core import tasks as tasks_lib
from mtl.core.tasks import Task


def _gate_means(intermediates) -> dict[str, jnp.ndarray]:
  """{'<module path>': mean gate weights [T, E]} of every sowed 'gates'."""
  out = {}
  flat = jax.tree_util.tree_flatten_with_path(intermediates)[0]
  for path, value in flat:
    names = [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]
    if 'gates' not in names:
      continue
    module = '/'.join(n for n in names[: names.index('gates')] if n)
    module = module.removeprefix('backbone/').removeprefix('backbone') or 'moe'
    out[module] = jnp.mean(value, axis=1)  # [T, B, E] -> [T, E]
  return out


def make_diagnostics(model, tasks: tuple[Task, ...]):
  """`diag(params, batch) -> {'gram': [T, T], 'gates': {module: [T, E]}}`."""
  rows = np.asarray(tasks_lib.train_rows(tasks))
  out_rows = np.asarray(tasks_lib.head_rows(tasks))[rows]
  trained = tasks_lib.trained(tasks)
  num_tasks = len(trained)

  def diag(params, batch):
    features = {'dense': batch['dense'], 'sparse': batch['sparse']}

    def task_losses(p):
      logits, variables = model.apply(
        {'params': p}, features, train=False, mutable=['intermediates']
      )
      sums, counts = losses_lib.masked_loss_sums(
        logits[out_rows],
        batch['labels'][rows],
        batch['mask'][rows],
        tasks=trained,
      )
      return sums / jnp.maximum(counts, 1.0), variables.get('intermediates', {})

    _, vjp_fn, inter = jax.vjp(task_losses, params, has_aux=True)
    group = task_grads_lib.shared_group(model)
    per_task = task_grads_lib.per_task(
      vjp_fn, num_tasks, [group] if group in params else None
    )
    shared = per_task.get(group, per_task)
    return {'gram': task_grads_lib.gram(shared), 'gates': _gate_means(inter)}

  return diag


def summarize(diag_out, tasks: tuple[Task, ...]) -> dict[str, float]:
  """Flat, named scalars of one `diag` result (host side)."""
  names = [t.name for t in tasks_lib.trained(tasks)]
  heads = [t.name for t in tasks if t.head is None]  # Model outputs.
  g = np.asarray(jax.device_get(diag_out['gram']), np.float64)
  norms = np.sqrt(np.maximum(np.diag(g), 0.0))
  out = {
    f'diag/grad_norm/{n}': float(v) for n, v in zip(names, norms, strict=True)
  }
  for i in range(len(names)):
    for j in range(i + 1, len(names)):
      denom = max(norms[i] * norms[j], 1e-12)
      out[f'diag/grad_cos/{names[i]}~{names[j]}'] = float(g[i, j] / denom)
  for module, means in diag_out['gates'].items():
    means = np.asarray(jax.device_get(means))
    for t, n in enumerate(heads):
      for e, v in enumerate(means[t]):
        out[f'diag/gate/{module}/{n}/{e}'] = float(v)
  return out
