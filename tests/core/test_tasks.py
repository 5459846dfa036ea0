"""Metric-only tasks and heads: which output each task is scored on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mtl.core import metrics, train_step
from mtl.core import tasks as tasks_lib
from mtl.core.tasks import Task

TASKS = (
  Task('click'),
  Task('buy', train=False),
  Task('buy_all', train=False, head='buy'),
  Task('ctcvr'),
)


def test_rows_by_hand():
  assert tasks_lib.num_heads(TASKS) == 3
  assert tasks_lib.head_rows(TASKS) == (0, 1, 1, 2)
  assert tasks_lib.train_rows(TASKS) == (0, 3)
  assert [t.name for t in tasks_lib.trained(TASKS)] == ['click', 'ctcvr']


@pytest.mark.parametrize(
  'tasks,message',
  [
    ((Task('a'), Task('a')), "task names ['a', 'a'] repeat"),
    ((Task('a'), Task('b', head='c')), "head 'c' is not a task with its own"),
    (
      (Task('a'), Task('b', head='a'), Task('c', head='b')),
      "task 'c': head 'b' is not a task with its own output",
    ),
    ((Task('a', train=False),), 'none is trained'),
  ],
)
def test_bad_task_lists(tasks, message):
  with pytest.raises(ValueError, match=None) as e:
    tasks_lib.head_rows(tasks)
  assert message in str(e.value)


class Fixed:
  """A stand-in model whose logits are the batch's 'dense' columns."""

  def apply(self, variables, features, train):
    del variables, train
    return features['dense'].T  # [heads, B]


def test_eval_scores_each_task_on_its_head():
  rng = np.random.default_rng(0)
  n = 64
  logits = rng.normal(size=(n, 3)).astype(np.float32)
  labels = (rng.random((4, n)) < 0.4).astype(np.float32)
  mask = np.ones((4, n), np.float32)
  mask[1] = labels[0]  # 'buy' counts the clicked rows only
  batch = {
    'dense': jnp.asarray(logits),
    'sparse': jnp.zeros((n, 0), jnp.int32),
    'labels': jnp.asarray(labels),
    'mask': jnp.asarray(mask),
  }
  step = train_step.make_eval_step(Fixed(), TASKS, num_bins=4096)
  out = metrics.summarize_eval(jax.jit(step)({}, batch), TASKS, 'val')
  for t, head in enumerate(tasks_lib.head_rows(TASKS)):
    keep = mask[t] > 0
    want = roc_auc_score(labels[t][keep], logits[keep, head])
    assert out[f'val/auc/{TASKS[t].name}'] == pytest.approx(want, abs=2e-3)
