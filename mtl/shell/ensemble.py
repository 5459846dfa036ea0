"""Fused models evaluated like one model (shell: reads workdirs, writes).

  members = load(config, workdir)     a finished run's or population's
                                      best-epoch params, model and data
  preds = predict(members, split)     [M, T, N]: probabilities (binary
                                      tasks) or values (regression)
  evaluate(preds[m], members, split)  the run's metrics (exact AUC, log
                                      loss, MSE) and the ranking metrics
                                      (GAUC, XAUC, RMSE, MAE) of one model
  fuse(members)                       mean, fitted-weight mean, rank mean,
                                      uniform and greedy soup: each with
                                      validation and test metrics
  write(directory, name, result)      <directory>/<name>/results.json

Separate workdirs of one dataset are fused by concatenating `Members`
(`combine`); soups need one architecture (same params structure).
"""

import copy
import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from mtl.core import ensemble, train_state, train_step
from mtl.core import ranking_metrics as rm
from mtl.core import tasks as tasks_lib
from mtl.core.architectures import ARCHITECTURES
from mtl.data import pipeline
from mtl.errors import ConfigError
from mtl.shell import build, checkpoint, keywords, members
from mtl.shell import selection as selection_lib
from mtl.shell import settings as settings_lib
from mtl.shell.json_files import write_json


@dataclasses.dataclass
class Members:
  """M trained models of one dataset, ready to predict."""

  names: list
  params: list  # one params tree per member
  model: object  # the Linen model (one architecture), or one per member
  dataset: object
  batch_size: int

  def __len__(self) -> int:
    return len(self.params)

  @property
  def tasks(self):
    return self.dataset.tasks

  def users(self, split: str) -> np.ndarray:
    """The user of each row (sparse column 'user_id'; else one user)."""
    s = self.dataset.splits[split]['sparse']
    if 'user_id' not in self.dataset.sparse_names:
      return np.zeros(len(s), np.int64)
    return s[:, self.dataset.sparse_names.index('user_id')]


def load(config, workdir) -> Members:
  """The best-epoch params (checkpoints_best; checkpoints with select_best
  'last') of the run or population trained in `workdir`.

  `config` gives the architecture and the data (any seed); the members are
  those the workdir's results.json lists (else the config's population).
  What else is read of it comes typed (`mtl.shell.settings`).
  """
  config = copy.deepcopy(config)
  keywords.resolve_model(config, ARCHITECTURES)
  loop = settings_lib.loop_settings(config)
  eval_batch_size = settings_lib.engine_settings(config).eval_batch_size
  dataset = build.load_dataset(config)
  spe = pipeline.steps_per_epoch(dataset.num_rows('train'), loop.batch_size)
  model, tx, weighting = build.build(config, dataset, spe * loop.num_epochs)
  example = train_step.features_of(
    pipeline.take_rows(dataset.splits['train'], np.arange(2))
  )
  num_tasks = len(tasks_lib.trained(dataset.tasks))
  one = jax.eval_shape(
    lambda: (
      train_state.init_train_state(
        model,
        tx,
        weighting,
        example,
        num_tasks=num_tasks,
        key=jax.random.key(0),
      ).params
    )
  )
  workdir = pathlib.Path(workdir)
  # Who is there: the workdir's results.json (a population lists its
  # members), else the config's population.
  stored = workdir / 'results.json'
  stored = json.loads(stored.read_text()) if stored.is_file() else {}
  if 'members' in stored:
    names = [m['member'] for m in stored['members']]
  elif stored or not members.is_population(config):
    names = None
  else:
    names = [m['name'] for m in members.members_of(config, num_tasks)]
  if names is not None:
    k = len(names)
    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct((k, *x.shape), x.dtype), one
    )
  else:
    names, abstract = [workdir.name], one
  mode = selection_lib.mode_of(loop.select_best)
  if mode == 'per_task':
    raise ConfigError(
      f"{workdir}: select_best is 'per_task' (params per task), expected "
      "'first', 'mean' or 'last': a member is one model's params"
    )
  sub = 'checkpoints' if mode == 'last' else 'checkpoints_best'
  params, _ = checkpoint.restore_params(workdir / sub, abstract)
  if abstract is not one:
    params = [jax.tree.map(lambda x, j=j: x[j], params) for j in range(k)]
  else:
    params = [params]
  return Members(names, params, model, dataset, eval_batch_size)


def combine(*groups: Members) -> Members:
  """Members of several workdirs (one dataset) as one group."""
  models = [g.model for g in groups]
  same = all(m == models[0] for m in models)
  return Members(
    [n for g in groups for n in g.names],
    [p for g in groups for p in g.params],
    models[0] if same else [m for g in groups for m in [g.model] * len(g)],
    groups[0].dataset,
    groups[0].batch_size,
  )


_APPLY = {}  # One compiled apply per model.


def _apply(model):
  if id(model) not in _APPLY:
    _APPLY[id(model)] = (
      model,
      jax.jit(
        lambda params, batch: model.apply(
          {'params': params}, train_step.features_of(batch), train=False
        )
      ),
    )
  return _APPLY[id(model)][1]


def predict_params(group: Members, params, split: str, model=None):
  """[T, N] predictions of one params tree (sigmoid for binary tasks)."""
  model = model or group.model
  data = pipeline.pad_split(group.dataset.splits[split], group.batch_size)
  n = group.dataset.num_rows(split)
  apply = _apply(model)
  out = []
  for start in range(0, data['labels'].shape[1], group.batch_size):
    rows = np.arange(start, start + group.batch_size)
    out.append(np.asarray(apply(params, pipeline.take_rows(data, rows))))
  logits = np.concatenate(out, axis=1)[:, :n]
  logits = logits[np.asarray(tasks_lib.head_rows(group.tasks))]
  binary = np.array([t.kind == 'binary' for t in group.tasks])[:, None]
  return np.where(binary, jax.nn.sigmoid(jnp.asarray(logits)), logits)


def predict(group: Members, split: str) -> np.ndarray:
  """[M, T, N] predictions of every member."""
  models = group.model if isinstance(group.model, list) else None
  return np.stack(
    [
      predict_params(group, p, split, models[j] if models else None)
      for j, p in enumerate(group.params)
    ]
  )


def evaluate(preds, group: Members, split: str, *, probabilities=True):
  """One model's metrics from its predictions [T, N] on `split`.

  Keys as a run's results (`<prefix>/auc/<task>`, logloss, mse), exact
  rather than binned, plus gauc/<task> (binary) and rmse, mae, xauc
  (regression; xauc alone for a weighted_logistic watch time, whose
  logit ranks). Without `probabilities` (rank averages) only the ranking
  metrics: auc, gauc, xauc.
  """
  prefix = 'val' if split == 'validation' else split
  labels = group.dataset.splits[split]['labels']
  mask = group.dataset.splits[split]['mask'] > 0
  users = group.users(split)
  out = {}
  for t, task in enumerate(group.tasks):
    y, p, u = labels[t][mask[t]], np.asarray(preds[t])[mask[t]], users[mask[t]]
    name = task.name
    if task.kind == 'binary':
      out[f'{prefix}/auc/{name}'] = rm.auc(y, p)
      out[f'{prefix}/gauc/{name}'] = rm.gauc(y, p, u)
      if probabilities:
        q = np.clip(p, ensemble.EPS, 1 - ensemble.EPS)
        ll = -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q))
        out[f'{prefix}/logloss/{name}'] = float(ll)
    else:
      out[f'{prefix}/xauc/{name}'] = rm.xauc(y, p, u)
      if probabilities and task.kind == 'regression':  # Not a logit's.
        out[f'{prefix}/mse/{name}'] = rm.rmse(y, p) ** 2
        out[f'{prefix}/rmse/{name}'] = rm.rmse(y, p)
        out[f'{prefix}/mae/{name}'] = rm.mae(y, p)
  return out


def selection(metrics: dict) -> float:
  """Higher is better: the mean AUC of the binary tasks (else minus the
  mean MSE), the score greedy soups and fitted comparisons select by."""
  aucs = [v for k, v in metrics.items() if '/auc/' in k]
  if aucs:
    return float(np.mean(aucs))
  return -float(np.mean([v for k, v in metrics.items() if '/mse/' in k]))


def _both(group, val, test, **kw):
  return {
    'validation': evaluate(val, group, 'validation', **kw),
    'test': evaluate(test, group, 'test', **kw),
  }


def fuse(group: Members, *, soups: bool = True, cache=None) -> dict:
  """Every fusion of `group`'s members, each {'validation', 'test', ...}.

  'members' lists each member's own metrics; 'mean', 'fitted' (per-task
  simplex weights fitted on validation), 'rank' (ranking metrics only),
  'uniform_soup' and 'greedy_soup' (selection: mean validation AUC of the
  binary tasks).
  """
  cache = cache or {}
  val = cache.get('validation')
  val = predict(group, 'validation') if val is None else val
  test = cache.get('test')
  test = predict(group, 'test') if test is None else test
  out = {'members': []}
  for j, name in enumerate(group.names):
    out['members'].append({'name': name, **_both(group, val[j], test[j])})
  out['mean'] = _both(group, val.mean(0), test.mean(0))
  labels = group.dataset.splits['validation']['labels']
  mask = group.dataset.splits['validation']['mask'] > 0
  weights = np.stack(
    [
      ensemble.fit_weights(val[:, t, mask[t]], labels[t][mask[t]], kind=k.kind)
      for t, k in enumerate(group.tasks)
    ]
  )  # [T, M]
  fitted = [
    np.einsum('tm,mtn->tn', weights, x) / weights.sum(1)[:, None]
    for x in (val, test)
  ]
  out['fitted'] = {**_both(group, *fitted), 'weights': weights.tolist()}
  ranked = [
    np.stack([ensemble.rank_average(x[:, t]) for t in range(x.shape[1])])
    for x in (val, test)
  ]
  out['rank'] = _both(group, *ranked, probabilities=False)
  if soups and not isinstance(group.model, list):
    uniform = ensemble.uniform_soup(group.params)
    out['uniform_soup'] = _both(
      group,
      *(predict_params(group, uniform, s) for s in ('validation', 'test')),
    )

    def score(params):
      p = predict_params(group, params, 'validation')
      return selection(evaluate(p, group, 'validation'))

    own = [selection(m['validation']) for m in out['members']]
    greedy, chosen, trace = ensemble.greedy_soup(group.params, score, own)
    out['greedy_soup'] = {
      **_both(
        group,
        *(predict_params(group, greedy, s) for s in ('validation', 'test')),
      ),
      'ingredients': [group.names[i] for i in chosen],
      'trace': trace,
    }
  return out


def write(directory, name: str, result: dict) -> pathlib.Path:
  """<directory>/<name>/results.json of one fused model."""
  path = pathlib.Path(directory) / name
  path.mkdir(parents=True, exist_ok=True)
  write_json(path / 'results.json', {'name': name, **result})
  return path / 'results.json'
