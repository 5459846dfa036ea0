"""Model selection ('first', 'last', 'mean', 'per_task') and early stopping.

The pure logic (mtl/shell/selection.py) against hand-written metric traces
and epochs derived by hand; the settings' checks and the workdir's
fingerprint of legacy values; then one census run through the command line
with 'per_task' and patience, checked against its own metrics.jsonl (the
oracle of every evaluation), mtl-eval on the test split, and a rerun.
"""

import json
import math

import jax
import ml_collections
import numpy as np
import pytest

from configs import smoke
from mtl.core.tasks import Task
from mtl.errors import ConfigError, WorkdirError
from mtl.shell import config_record, engines, restore, selection, validate
from tests import cli

A = Task('a')  # binary
B = Task('b')  # binary
C = Task('c', 'regression')
D = Task('d', train=False)  # metric-only
TASKS = (A, B, C, D)

# Hand-written validation metrics of five evaluations (epochs 1..5).
TRACE = [
  {'auc/a': 0.70, 'auc/b': 0.60, 'mse/c': 2.0, 'auc/d': 0.50},
  {'auc/a': 0.75, 'auc/b': 0.58, 'mse/c': 1.0, 'auc/d': 0.55},
  {'auc/a': 0.74, 'auc/b': 0.66, 'mse/c': 1.5, 'auc/d': 0.52},
  {'auc/a': 0.73, 'auc/b': 0.65, 'mse/c': 0.9, 'auc/d': 0.53},
  {'auc/a': 0.72, 'auc/b': 0.64, 'mse/c': 3.0, 'auc/d': 0.54},
]


def _summary(row, prefix='val'):
  return {f'{prefix}/{k}': v for k, v in row.items()}


def _run(mode, trace, patience=0):
  """Feeds the trace; returns (record, the epoch patience stopped at)."""
  best = selection.initial(1, mode, len(TASKS))
  for epoch, row in enumerate(trace, 1):
    scores = selection.scores(_summary(row), TASKS, 'val', mode)
    selection.update(best, [scores], epoch)
    if selection.exhausted(best, patience):
      return best, epoch
  return best, None


def test_first_takes_the_first_tasks_best_auc():
  best, _ = _run('first', TRACE)
  assert best['epoch'] == [[2]]  # a: 0.70 0.75 0.74 0.73 0.72
  assert best['score'] == [[0.75]]


def test_mean_of_the_trained_tasks():
  # Mean of auc a, auc b and -mse c (d is metric-only), by hand:
  # 1: (0.70 + 0.60 - 2.0) / 3 = -0.2333   2: (0.75 + 0.58 - 1.0) / 3 = 0.11
  # 3: (0.74 + 0.66 - 1.5) / 3 = -0.0333   4: (0.73 + 0.65 - 0.9) / 3 = 0.16
  # 5: (0.72 + 0.64 - 3.0) / 3 = -0.5467
  best, _ = _run('mean', TRACE)
  assert best['epoch'] == [[4]]
  assert best['score'][0][0] == pytest.approx(0.16, abs=1e-12)


def test_mean_skips_a_task_without_a_score():
  row = {'val/auc/a': math.nan, 'val/auc/b': 0.6, 'val/mse/c': 0.2}
  assert selection.scores(row, TASKS, 'val', 'mean') == [
    pytest.approx((0.6 - 0.2) / 2)
  ]


def test_per_task_takes_each_tasks_own_best_epoch():
  best, _ = _run('per_task', TRACE)
  # a: max auc at 2; b: 0.66 at 3; c: min mse 0.9 at 4; d: 0.55 at 2.
  assert best['epoch'] == [[2, 3, 4, 2]]
  assert best['score'] == [[0.75, 0.66, -0.9, 0.55]]


def test_last_selects_nothing():
  best, _ = _run('last', TRACE)
  assert best['epoch'] == [[]]
  assert selection.selected_epochs(best, 0, 5) == []


@pytest.mark.parametrize(
  'mode, patience, stop',
  [
    # first: improves at 1, 2; then 3, 4, 5 do not.
    ('first', 2, 4),
    ('first', 3, 5),
    ('first', 4, None),
    # mean: improves at 1, 2, 4; 3 and 5 do not.
    ('mean', 1, 3),
    ('mean', 2, None),
    # per_task: some task improves at 1, 2, 3, 4; none at 5.
    ('per_task', 1, 5),
    ('per_task', 2, None),
  ],
)
def test_patience_stops_at_the_right_evaluation(mode, patience, stop):
  assert _run(mode, TRACE, patience)[1] == stop


def test_a_population_stops_when_every_member_has_run_out():
  best = selection.initial(2, 'first', 1)
  # Member 0 improves at 1 only; member 1 at 1 and 3.
  trace = [([0.5], [0.5]), ([0.4], [0.4]), ([0.3], [0.6]), ([0.2], [0.5])]
  stops = []
  for epoch, scores in enumerate(trace, 1):
    improved = selection.update(best, scores, epoch)
    stops.append(selection.exhausted(best, 2))
    assert improved == [[epoch == 1], [epoch in (1, 3)]]
  assert best['wait'] == [3, 1]
  assert stops == [False, False, False, False]  # member 1 waits 1 at 4
  selection.update(best, [[0.1], [0.5]], 5)
  assert selection.exhausted(best, 2)
  assert not selection.exhausted(best, 0)  # 0: off


def test_a_record_of_an_earlier_mtl_resumes_as_first():
  single = {'score': 0.8, 'epoch': 3}  # before populations
  many = {'score': [0.8, 0.7], 'epoch': [3, 2]}  # one score per member
  assert selection.restored(single, 1, 'first', 2) == {
    'mode': 'first',
    'score': [[0.8]],
    'epoch': [[3]],
    'wait': [0],
  }
  assert selection.restored(many, 2, 'first', 2)['epoch'] == [[3], [2]]
  # Another mode (a deliberate change): selection starts afresh.
  assert selection.restored(many, 2, 'mean', 2) == selection.initial(
    2, 'mean', 2
  )


def test_legacy_bools_and_the_checks():
  assert selection.mode_of(True) == 'first'
  assert selection.mode_of(False) == 'last'
  assert selection.mode_of('per_task') == 'per_task'
  with pytest.raises(
    ConfigError, match="patience is 2 with select_best 'last'"
  ):
    selection.check(False, 2, population=False)
  with pytest.raises(ConfigError, match="'per_task' with a population"):
    selection.check('per_task', 0, population=True)
  selection.check(True, 3, population=True)


def _config(**overrides):
  values = smoke.get_config('mmoe').to_dict()
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = values
    for p in parents:
      node = node[p]
    node[leaf] = value
  return ml_collections.ConfigDict(values)


@pytest.mark.parametrize(
  'overrides, message',
  [
    ({'select_best': 'best'}, "select_best 'best' is not one of first, last"),
    ({'select_best': 1}, 'select_best is 1 (an int), expected True or False'),
    ({'early_stopping.patience': -1}, 'early_stopping.patience is -1'),
    (
      {'select_best': 'last', 'early_stopping.patience': 1},
      "early_stopping.patience is 1 with select_best 'last'",
    ),
  ],
)
def test_bad_settings_are_one_line(overrides, message):
  with pytest.raises(ConfigError) as err:
    validate.check_config(_config(**overrides))
  assert message in str(err.value)
  assert '\n' not in str(err.value)


def test_every_value_is_accepted_and_a_config_file_may_set_a_bool():
  for value in (True, False, *selection.MODES):
    validate.check_config(_config(select_best=value))
  config = smoke.get_config('mmoe')
  config.select_best = False  # a config written when the key was a bool
  config.select_best = 'mean'
  assert config.to_dict()['select_best'] == 'mean'


def test_a_workdir_recorded_with_true_reruns_with_first(tmp_path):
  old = smoke.get_config('mmoe').to_dict()
  old['select_best'] = True
  old.pop('early_stopping')  # recorded before the key existed
  (tmp_path / 'results.json').write_text('{}')  # trained state
  (tmp_path / 'config.json').write_text(json.dumps(old))
  new = smoke.get_config('mmoe').to_dict()
  assert new['select_best'] == 'first'
  assert config_record.check_config(tmp_path, new) == {}
  new['select_best'] = 'mean'
  with pytest.raises(WorkdirError, match='select_best "first" -> "mean"'):
    config_record.check_config(tmp_path, new)


def test_stack_select_keeps_each_slot_where_it_improved():
  new = {'w': np.arange(6.0).reshape(2, 3)}
  first = engines.stack_select([True, True, True], new, None)
  assert first['w'].shape == (3, 2, 3)
  newer = {'w': -np.arange(6.0).reshape(2, 3)}
  got = engines.stack_select([False, True, False], newer, first)
  want = np.stack([new['w'], newer['w'], new['w']])
  np.testing.assert_array_equal(np.asarray(got['w']), want)


# --- One census run through the command line ---------------------------


def _train(args, census_tfds_dir):
  env = cli.one_device_env(optimized=True)  # census epochs: executed more
  return cli.run(
    [
      '--config=configs/smoke.py:mmoe,census',
      f'--config.dataset.data_dir={census_tfds_dir}',
      '--config.select_best=per_task',
      '--config.early_stopping.patience=1',
      '--config.num_epochs=4',
      '--config.batch_size=8192',
      '--config.eval_batch_size=16384',
      '--config.steps_per_dispatch=8',
      # A large constant step: validation AUCs go up and down.
      '--config.optimizer.learning_rate=0.5',
      '--config.optimizer.schedule=constant',
      *args,
    ],
    env=env,
  )


def _val_rows(path):
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  return [r for r in rows if 'val/epoch' in r]


SPE = 199_523 // 8192  # Census training steps an epoch at batch 8192.
NAMES = ['income', 'marital']


def _checked_run(w, seed, census_tfds_dir):
  """Trains seed `seed` into `w` and checks results.json against the
  oracle, metrics.jsonl's validation rows: each task's epoch is the argmax
  (the first of equal maxima) of its validation AUC; with patience 1 the run
  stops after the first evaluation that improved no task's best, or trains
  its 4 epochs. Returns (results, rows, whether the tasks' epochs differ,
  whether it stopped early)."""
  proc = _train([f'--workdir={w}', f'--config.seed={seed}'], census_tfds_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((w / 'results.json').read_text())
  rows = _val_rows(w / 'metrics.jsonl')
  aucs = np.array([[r[f'val/auc/{t}'] for t in NAMES] for r in rows])
  epochs = [int(r['val/epoch']) for r in rows]
  want = {t: epochs[int(np.argmax(aucs[:, i]))] for i, t in enumerate(NAMES)}
  assert results['select_best'] == 'per_task'
  assert results['selected_epoch'] == want
  for t in NAMES:
    row = rows[epochs.index(want[t])]
    assert results['validation'][f'val/auc/{t}'] == row[f'val/auc/{t}']
  running = np.maximum.accumulate(aucs, axis=0)
  stale = [
    e for i, e in enumerate(epochs) if i and (aucs[i] <= running[i - 1]).all()
  ]
  if stale and stale[0] < 4:
    assert results['stopped_early']['epoch'] == stale[0]
    assert epochs[-1] == stale[0]
    assert results['steps'] == stale[0] * SPE
    assert 'stopped early after epoch' in proc.stdout + proc.stderr
  else:
    assert results['stopped_early'] is None
    assert epochs[-1] == 4 and results['steps'] == 4 * SPE
  differ = len(set(want.values())) == 2
  return results, rows, differ, results['stopped_early'] is not None


@pytest.mark.slow
def test_per_task_selection_and_early_stopping_end_to_end(
  tmp_path, census_tfds_dir
):
  """Every run is checked against the oracle (`_checked_run`). The
  after-training checks need a run whose tasks' best epochs differ, the
  rerun check one that stopped early; which runs are depends on the float
  trajectory of a large constant step, so seeds are tried in turn until
  both were seen (measured here: seeds 1 and 4 differ, 2, 3 and 4 stop)."""
  differ = stopped = None
  for seed in range(6):
    w = tmp_path / f'w{seed}'
    results, rows, differs, stops = _checked_run(w, seed, census_tfds_dir)
    if differs and differ is None:
      differ = (w, results)
    if stops and stopped is None:
      stopped = (w, seed, results, rows)
    if differ and stopped:
      break
  assert differ and stopped, 'seeds 0-5: no differing epochs or early stop'
  w, results = differ

  # mtl-eval on the test split: results.json's test metrics, bit for bit.
  env = cli.one_device_env(optimized=True)
  ev = cli.run(
    [f'--workdir={w}', '--split=test'], env=env, module='mtl.shell.evaluate'
  )
  assert ev.returncode == 0, ev.stderr[-3000:]
  (path,) = w.glob('eval_test*.json')
  metrics = json.loads(path.read_text())['metrics']
  assert {k: metrics[k] for k in results['test']} == results['test']

  # Predictions: task t from its own params (the stacked best checkpoint).
  run = restore.open_run(w)
  params, where = restore.restore_params(run)
  assert where['per_task'] is True
  rng = np.random.default_rng(0)
  dense = rng.normal(size=(5, len(run.artefact['dense_names']))).astype('f4')
  sparse = np.zeros((5, len(run.artefact['sparse_names'])), np.int32)
  got = restore.make_outputs(run, per_task=True)(params, dense, sparse)
  plain = restore.make_outputs(run)
  for t in range(len(NAMES)):
    own = jax.tree.map(lambda x, t=t: x[t], params)
    np.testing.assert_array_equal(got[t], plain(own, dense, sparse)[t])

  # A rerun of the stopped workdir trains no more.
  w, seed, results, rows = stopped
  again = _train([f'--workdir={w}', f'--config.seed={seed}'], census_tfds_dir)
  assert again.returncode == 0, again.stderr[-3000:]
  rerun = json.loads((w / 'results.json').read_text())
  assert rerun['steps'] == results['steps'] == rerun['resumed_from_step']
  assert rerun['test'] == results['test']
  assert rerun['stopped_early'] == results['stopped_early']
  assert len(_val_rows(w / 'metrics.jsonl')) == len(rows)
