"""The loss guards: non-finite steps and diverging runs.

Oracle: losses made by hand, with the step and ratio the guard must name.
"""

import numpy as np
import pytest

from configs import smoke
from mtl.core.tasks import Task
from mtl.shell import trainer
from mtl.shell.finite import Diverged, FiniteGuard, NonFinite

TASKS = (Task('a', 'binary'), Task('b', 'binary'))


def _guard(**kw):
  kw = {'skip': False, 'max_consecutive': 3, **kw}
  return FiniteGuard(TASKS, **kw)


def test_non_finite_names_task_and_step():
  g = _guard()
  g.add(10, {'loss': np.array([[0.5, 0.6], [0.5, np.inf]])})
  with pytest.raises(NonFinite, match=r"inf for task 'b' at step 12"):
    g.check()


def test_skipped_steps_stop_after_max_consecutive():
  g = _guard(skip=True, max_consecutive=2)
  g.add(0, {'loss': np.array([[np.nan, 1.0], [0.4, 0.4], [np.nan, 1.0]])})
  g.check()
  assert g.skipped == 2
  g.add(3, {'loss': np.array([[np.nan, 1.0]])})
  with pytest.raises(NonFinite, match='2 non-finite steps in a row'):
    g.check()


def test_divergence_warns_once_per_task(caplog):
  g = _guard(divergence_factor=1000.0)
  first = np.array([[0.7, 0.5]])
  g.add(0, {'loss': first})
  g.add(1, {'loss': np.array([[0.7 * 999, 0.5]])})  # Below the factor.
  g.check()
  assert not caplog.records
  g.add(2, {'loss': np.array([[0.7 * 2000, 0.5], [1e25, 0.5]])})
  g.check()
  warnings = [r.getMessage() for r in caplog.records]
  assert len(warnings) == 1  # Once for task 'a', not per step.
  assert (
    "task 'a' is 1.4e+03 at step 3, 2e+03x its first value 0.7" in (warnings[0])
  )


def test_divergence_stops_when_asked():
  g = _guard(divergence_factor=10.0, stop_on_divergence=True)
  g.add(0, {'loss': np.array([[1.0, 1.0]])})
  g.add(1, {'loss': np.array([[1.0, 10.5]])})
  with pytest.raises(Diverged, match=r"task 'b' is 10.5 at step 2, 10.5x"):
    g.check()


def test_divergence_off_with_factor_zero():
  g = _guard(divergence_factor=0.0, stop_on_divergence=True)
  g.add(0, {'loss': np.array([[1.0, 1.0], [1e30, 1e30]])})
  g.check()


def test_a_diverging_run_stops_and_says_no_checkpoint_exists(
  tmp_path, census_tfds_dir
):
  """Adam at lr 1e6 on census: finite losses of ~1e25 (the fault probe)."""
  c = smoke.get_config('mmoe,census')
  c.dataset.data_dir = str(census_tfds_dir)
  c.optimizer.learning_rate = 1e6
  c.num_epochs = 1
  c.stop_on_divergence = True
  with pytest.raises(Diverged) as e:
    trainer.train(c, tmp_path / 'w')
  assert 'the run is diverging' in str(e.value)
  assert str(e.value).endswith('no checkpoint was written yet')
