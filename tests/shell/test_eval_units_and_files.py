"""A regression's RMSE in its label's units, and mtl-eval's file names.

Oracles: scikit-learn's RMSE of predictions taken back to the label's units
by hand (x * std + mean), hand-computed std of a standardised label, and
the files on disk (an earlier evaluation's bytes never change).
"""

import json

import numpy as np
import pytest
from sklearn.metrics import mean_squared_error

from mtl.core import losses, metrics
from mtl.core import tasks as tasks_lib
from mtl.core.tasks import Task
from mtl.data import schema_parse
from mtl.shell import evaluate, restore


def _counts(z, y, mask, tasks):
  """The eval step's counts: masked loss sums and counts (metric losses)."""
  sums, count = losses.masked_loss_sums(z, y, mask, tasks=tasks, metric=True)
  t = len(tasks)
  zeros = np.zeros((t, 4), np.int32)
  return {'loss_sum': sums, 'count': count, 'pos': zeros, 'neg': zeros}


def test_rmse_is_in_the_label_units_of_a_standardised_label():
  rng = np.random.default_rng(0)
  play = rng.gamma(2.0, 30.0, 200)  # seconds; the label is log1p of them
  label = np.log1p(play)
  mean, std = label.mean(), label.std()
  pred = label + rng.normal(0, 0.4, 200)  # a model's guess, label units
  y = ((label - mean) / std).astype(np.float32)  # what training sees
  z = ((pred - mean) / std).astype(np.float32)
  mask = np.ones((2, 200), np.float32)
  mask[1, 150:] = 0
  tasks = (
    Task('watch', 'regression', label_std=std),
    Task('raw', 'regression'),
  )
  out = metrics.summarize_eval(
    _counts(np.stack([z, z]), np.stack([y, y]), mask, tasks), tasks, 'val'
  )
  want = mean_squared_error(label, pred) ** 0.5  # sklearn, label units
  assert out['val/rmse/watch'] == pytest.approx(want, rel=1e-5)
  assert out['val/mse/watch'] == pytest.approx(want**2 / std**2, rel=1e-5)
  # label_std 1 (no 'standard' scale): rmse = sqrt(mse) of the rows kept.
  kept = mean_squared_error(y[:150], z[:150]) ** 0.5
  assert out['val/rmse/raw'] == pytest.approx(kept, rel=1e-5)


def test_label_std_comes_from_a_standard_scale_only():
  moments = {'w': {'mean': 3.0, 'std': 1.7}}
  features = {'x': {'kind': 'dense'}}
  for scale, std in (('standard', 1.7), ('center', 1.0), ('none', 1.0)):
    entry = {'label': 'w', 'kind': 'regression', 'scale': scale}
    spec = schema_parse.parse(features, {'w': entry}).tasks[0]
    assert tasks_lib.task_of(spec, moments).label_std == std, scale


def test_eval_file_names_say_split_and_checkpoint():
  best = {'checkpoint': '/w/checkpoints_best', 'step': 120}
  latest = {'checkpoint': '/w/checkpoints', 'step': 300}
  assert evaluate.file_stem('test', best) == 'eval_test_best_step120'
  assert evaluate.file_stem('validation', latest) == 'eval_validation_step300'


def test_an_earlier_evaluation_is_never_replaced(tmp_path):
  members = tmp_path / 'members'
  (members / 'a').mkdir(parents=True)
  first = {'split': '/x/rows.csv', 'metrics': {'eval/auc/y': 0.7}}
  (path,) = evaluate.write_new([(tmp_path, 'eval_rows_step5', first)])
  assert path == tmp_path / 'eval_rows_step5.json'
  before = path.read_bytes()
  # The same evaluation again: the same file, the same bytes.
  again = evaluate.write_new([(tmp_path, 'eval_rows_step5', dict(first))])
  assert again == [path] and path.read_bytes() == before
  # Another file of the same stem: a new name, the first file untouched.
  other = {'split': '/y/rows.csv', 'metrics': {'eval/auc/y': float('nan')}}
  (second,) = evaluate.write_new([(tmp_path, 'eval_rows_step5', other)])
  assert second == tmp_path / 'eval_rows_step5-2.json'
  assert path.read_bytes() == before
  assert json.loads(second.read_text())['split'] == '/y/rows.csv'
  # NaN metrics compare by their text: the same evaluation keeps -2.
  assert evaluate.write_new([(tmp_path, 'eval_rows_step5', other)]) == [second]
  # A population's files move together: a member's file is new, but the
  # summary's name is taken by another evaluation, so both get -3.
  member = {'member': 'a', 'metrics': {}}
  summary = {'members': [member], 'split': 'z'}
  got = evaluate.write_new(
    [
      (members / 'a', 'eval_rows_step5', member),
      (tmp_path, 'eval_rows_step5', summary),
    ]
  )
  assert [p.name for p in got] == ['eval_rows_step5-3.json'] * 2
  assert not (members / 'a' / 'eval_rows_step5.json').exists()
  assert path.read_bytes() == before


def test_mtl_eval_takes_the_std_from_preprocessing_json(tmp_path):
  """A restored run's tasks carry no std: mtl-eval reads it from the saved
  label moments, for 'standard' regressions only."""
  artefact = {
    'kind': 'table',
    'schema': {
      'tasks': {
        'click': {'label': 'click'},
        'watch': {'label': 'w', 'kind': 'regression', 'scale': 'standard'},
        'stay': {'label': 's', 'kind': 'regression', 'scale': 'center'},
      }
    },
    'encoding': {
      'labels': {
        'click': {'mean': 0.1, 'std': 0.3},
        'watch': {'mean': 2.0, 'std': 1.25},
        'stay': {'mean': 5.0, 'std': 4.0},
      }
    },
  }
  tasks = (
    Task('click'),
    Task('watch', 'regression'),
    Task('stay', 'regression'),
  )
  run = restore.Run(tmp_path, None, artefact, tasks, None, [{'name': None}])
  got = evaluate.label_stds(run)
  assert [t.label_std for t in got] == [1.0, 1.25, 1.0]
  assert [t.name for t in got] == ['click', 'watch', 'stay']
