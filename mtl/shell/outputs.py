"""What a run writes and shows: per-member metrics, results, console lines.

Shell code used by `mtl.shell.trainer`. A single run writes into the
workdir; a population's member k into members/<name>/. Every member's
results.json has one schema (`member_result`). What they record of the
config comes read once, in the run's typed settings (`mtl.shell.settings`:
`RunRecord`, `Settings`).
"""

import jax
import numpy as np

from mtl.core import metrics as metrics_lib
from mtl.data import preprocessing
from mtl.shell import console, engines, selection
from mtl.shell.json_files import truncate_metrics, write_json
from mtl.shell.writers import Writers


class Outputs:
  """Each member's metrics.jsonl, W&B run and results.json (process 0).

  `record` is the run's `RunRecord`; `member_configs` a population's
  members' config.json (`mtl.shell.members.member_config`, one a member),
  None for a single run (the workdir records its config.json).
  """

  def __init__(self, record, workdir, members, *, member_configs, start_step):
    self.dirs, self.writers = [], []
    if jax.process_index() != 0:
      return
    population = member_configs is not None
    for j, m in enumerate(members):
      d = workdir / 'members' / m['name'] if population else workdir
      d.mkdir(parents=True, exist_ok=True)
      member = member_configs[j] if population else None
      wandb_cfg = dict(record.wandb)
      if population:
        write_json(d / 'config.json', member)
        wandb_cfg['group'] = wandb_cfg.get('group') or workdir.name
        wandb_cfg['name'] = '/'.join(
          filter(None, [wandb_cfg.get('name'), m['name']])
        )
        wandb_cfg['tags'] = tuple(wandb_cfg.get('tags') or ()) + ('population',)
      truncate_metrics(d / 'metrics.jsonl', after_step=start_step)
      self.dirs.append(d)
      self.writers.append(
        Writers(d, config=member or record.config, wandb_cfg=wandb_cfg)
      )

  def write(self, step, per_member: list[dict]) -> None:
    for w, scalars in zip(self.writers, per_member, strict=False):
      w.write(step, scalars)

  def close(self) -> None:
    for w in self.writers:
      w.close()
    self.writers = []

  def finish(self, step, final: list[dict], results: list[dict]) -> None:
    """Each member's final metrics, W&B summary and results.json."""
    for j, w in enumerate(self.writers):
      w.write(step, final[j])
      w.summary(final[j])
      w.close()
      write_json(self.dirs[j] / 'results.json', results[j])
    self.writers = []


def write_preprocessing(record, workdir, dataset) -> None:
  """<workdir>/preprocessing.json: how rows were encoded (process 0);
  `record` is the run's `RunRecord` (its dataset's name and keywords)."""
  if jax.process_index() == 0:
    write_json(
      workdir / preprocessing.FILE,
      preprocessing.artefact(record.dataset_name, record.dataset, dataset),
    )


def member_scalars(m, j, tasks):
  return metrics_lib.summarize_train(jax.tree.map(lambda x: x[:, j], m), tasks)


def eval_lines(engine, params, split, tasks, prefix):
  counts = engine.evaluate(params, split)
  return [
    metrics_lib.summarize_eval(
      jax.tree.map(lambda x, j=j: x[j], counts), tasks, prefix
    )
    for j in range(engine.size)
  ]


def selected_epochs(best: dict, j: int, tasks, num_epochs: int):
  """Member j's selected epoch (the last where no evaluation selects);
  with 'per_task' {task: its epoch}."""
  epochs = selection.selected_epochs(best, j, num_epochs)
  if best['mode'] == 'per_task':
    return {t.name: e for t, e in zip(tasks, epochs, strict=True)}
  return epochs[0] if epochs else num_epochs


def final_lines(engine, params, tasks, task_epochs=None) -> list[dict]:
  """Each member's validation and test metrics of `params`; with
  `task_epochs` ({task: epoch}, 'per_task': params stacked [T, ...]) each
  task's metrics are those of its own params, evaluated once per epoch."""
  final = [{} for _ in range(engine.size)]
  for split, prefix in (('validation', 'val'), ('test', 'test')):
    if task_epochs is None:
      for j, s in enumerate(eval_lines(engine, params, split, tasks, prefix)):
        final[j].update(s)
      continue
    epochs = list(task_epochs.values())
    lines = {}  # epoch -> the metrics of its params
    for t, task in enumerate(tasks):
      if epochs[t] not in lines:
        one = engines.task_params(params, t)
        lines[epochs[t]] = eval_lines(engine, one, split, tasks, prefix)[0]
      final[0].update(
        (k, v)
        for k, v in lines[epochs[t]].items()
        if k.split('/', 2)[-1] == task.name
      )
  return final


def stopped_early(best, patience, step, spe, total):
  """results.json's record of an early stop (None: trained to the end)."""
  if not (selection.exhausted(best, patience) and step < total):
    return None
  epoch = step // spe
  what = {'per_task': 'any task', 'mean': "the tasks' mean"}.get(
    best['mode'], 'the first task'
  )
  many = ' of any member' if len(best['wait']) > 1 else ''
  return {
    'epoch': epoch,
    'patience': patience,
    'why': (
      f'stopped early after epoch {epoch} of {total // spe}: {patience} '
      f'evaluation(s) in a row without a better validation score of {what}'
      f'{many} (early_stopping.patience={patience})'
    ),
  }


def eval_line(epoch, num_epochs, per_member, prefix) -> str:
  """'epoch 3/12  val auc/income 0.9412 ...' (a population: the mean)."""
  if len(per_member) == 1:
    shown = per_member[0]
  else:
    shown = {
      k: float(np.mean([s[k] for s in per_member if s[k] is not None] or [0]))
      for k in per_member[0]
    }
  members = f' (mean of {len(per_member)})' if len(per_member) > 1 else ''
  return (
    f'epoch {epoch}/{num_epochs}  {prefix}{members}  '
    f'{console.format_metrics(shown, prefix)}'
  )


def member_result(
  settings,
  m: dict,
  tasks,
  final: dict,
  *,
  selected_epoch,
  steps: int,
  resumed_from_step: int,
  num_params: int,
  population_size,
  engine,
  nonfinite_skipped: int,
  examples_per_s,
  wall_time_s: float,
  stopped_early=None,
) -> dict:
  """One member's results.json: the same schema for a single run
  (`settings`: the run's `Settings`)."""
  record = settings.record
  return {
    'model_name': record.model_name,
    'model': record.model,
    'dataset_name': record.dataset_name,
    'dataset': record.dataset,
    'weighting_name': record.weighting_name,
    'weighting': m['weighting'],
    'member': m['name'],
    'seed': m['seed'],
    'learning_rate': m['learning_rate'],
    'task_weights': list(m['task_weights']),
    'tasks': [t.name for t in tasks],
    'select_best': selection.mode_of(settings.loop.select_best),
    'selected_epoch': selected_epoch,
    'stopped_early': stopped_early,
    'num_epochs': settings.loop.num_epochs,
    'steps': steps,
    'resumed_from_step': resumed_from_step,
    'num_params': num_params,
    'population_size': population_size,
    'num_devices': engine.num_devices,
    'num_processes': jax.process_count(),
    'parallel_backend': (
      None if engine.devices is None else record.parallel_backend
    ),
    'nonfinite_steps_skipped': nonfinite_skipped,
    'train_examples_per_s': examples_per_s,
    'wall_time_s': wall_time_s,
    'validation': {k: v for k, v in final.items() if k.startswith('val/')},
    'test': {k: v for k, v in final.items() if k.startswith('test/')},
  }


def print_summary(results, workdir, is_population) -> None:
  if is_population:
    tests = [r['test'] for r in results]
    line = eval_line(
      results[0]['num_epochs'], results[0]['num_epochs'], tests, 'test'
    )
    console.say(line.split('  ', 1)[1])
  else:
    r = results[0]
    epoch = r['selected_epoch']
    if isinstance(epoch, dict):  # per_task
      epoch = ', '.join(f'{t} {e}' for t, e in epoch.items())
    console.say(
      f'val   {console.format_metrics(r["validation"], "val")}  '
      f'(epoch {epoch} of {r["num_epochs"]})'
    )
    console.say(f'test  {console.format_metrics(r["test"], "test")}')
  console.say(f'workdir {workdir}')
