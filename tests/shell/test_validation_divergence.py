"""A diverged run ends at its evaluation (FiniteGuard.validation).

Oracle: losses written by hand; the rule is a validation loss that is not
finite or above divergence_factor x the task's first training loss, and
the line names the metric, task, value, epoch, ratio and factor.
"""

import numpy as np
import pytest

from mtl.core.tasks import Task
from mtl.shell.finite import Diverged, FiniteGuard

TASKS = (Task('click', 'binary'), Task('dwell', 'regression'))


def _guard(factor=1000.0, first=(0.5, 2.0)):
  g = FiniteGuard(
    TASKS, skip=False, max_consecutive=3, divergence_factor=factor
  )
  if first is not None:
    g.add(0, {'loss': np.array([first])})  # The reference: first losses.
    g.check()
  return g


def test_a_loss_above_the_factor_times_the_first_training_loss_stops():
  g = _guard()
  g.validation({'val/logloss/click': 499.0, 'val/mse/dwell': 1999.0}, 1)
  with pytest.raises(Diverged) as e:
    g.validation({'val/logloss/click': 0.3, 'val/mse/dwell': 2500.0}, 2)
  assert str(e.value) == (
    "validation mse of task 'dwell' is 2500 at epoch 2, 1.25e+03x its first "
    'training loss 2 (divergence_factor=1000): the run diverged; lower '
    'optimizer.learning_rate'
  )


def test_a_non_finite_validation_loss_stops_even_with_the_check_off():
  g = _guard(factor=0.0, first=None)
  g.validation({'val/logloss/click': 1e30, 'val/mse/dwell': 1.0}, 1)
  with pytest.raises(
    Diverged, match=r"logloss of task 'click' is nan at epoch 3"
  ):
    g.validation({'val/logloss/click': float('nan')}, 3)


def test_weighted_logloss_counts_and_untrained_tasks_do_not():
  g = FiniteGuard(
    (Task('watch', 'weighted_logistic'),),
    skip=False,
    max_consecutive=3,
    divergence_factor=10.0,
  )
  g.add(0, {'loss': np.array([[0.7]])})
  g.check()
  g.validation({'val/weighted_logloss/other': 1e9}, 1)  # not a guarded task
  with pytest.raises(Diverged, match="weighted_logloss of task 'watch'"):
    g.validation({'val/weighted_logloss/watch': 7.5}, 1)  # > 10 x 0.7
