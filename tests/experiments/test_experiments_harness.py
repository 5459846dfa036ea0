"""experiments/harness: statistics against numpy, the runner's reuse rules,
the results writer.

The runner trains the synthetic smoke config (configs/smoke.py, no data
files) for real where it matters that the trainer's own config.json compares
equal to the requested config; the other cases count calls to a stand-in.
"""

import json
import math

import numpy as np
import pytest

from configs import smoke
from experiments import harness
from experiments.harness import runner, stats
from mtl import errors as mtl_errors

XS = [0.91, 0.934, 0.9283, 0.9401, 0.9122, 0.925]
YS = [0.905, 0.931, 0.9301, 0.9322, 0.9101, 0.9202]


@pytest.mark.parametrize('ddof', [0, 1])
def test_mean_std_and_standard_error_match_numpy(ddof):
  m, s = stats.mean_std(XS, ddof=ddof)
  assert m == pytest.approx(np.mean(XS), abs=1e-15)
  assert s == pytest.approx(np.std(XS, ddof=ddof), rel=1e-12)
  se = np.std(XS, ddof=1) / np.sqrt(len(XS))
  assert stats.standard_error(XS) == pytest.approx(se, rel=1e-12)
  summary = stats.summarize(XS, ddof=ddof)
  assert (summary.mean, summary.std, summary.n) == (m, s, len(XS))
  assert stats.mean_std([0.5]) == (0.5, 0.0)
  with pytest.raises(ValueError):
    stats.mean([])


def test_differences_in_standard_errors_match_numpy():
  a, b = np.array(XS), np.array(YS[:5])
  diff, z = stats.diff_in_se(XS, YS[:5])
  se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
  assert diff == pytest.approx(a.mean() - b.mean(), abs=1e-15)
  assert z == pytest.approx((a.mean() - b.mean()) / se, rel=1e-12)
  # Summaries give the same as samples.
  assert stats.diff_in_se(stats.summarize(XS), stats.summarize(YS[:5])) == (
    pytest.approx(diff),
    pytest.approx(z),
  )
  d = np.array(XS) - np.array(YS)
  diff, z = stats.paired_diff_in_se(XS, YS)
  assert diff == pytest.approx(d.mean(), abs=1e-15)
  assert z == pytest.approx(
    d.mean() / (d.std(ddof=1) / np.sqrt(len(d))), rel=1e-12
  )
  assert stats.diff_in_se([1.0, 1.0], [0.0, 0.0])[1] == math.inf
  with pytest.raises(ValueError):
    stats.paired_diff_in_se(XS, YS[:5])


def test_metric_cell_is_the_paired_comparison_in_the_metrics_direction():
  auc = [{'test/auc/a': x} for x in XS]
  ref = [{'test/auc/a': y} for y in YS]
  cell = stats.metric_cell(auc, 'a', ref)
  d = np.array(XS) - np.array(YS)
  z = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))  # 2.62 SE.
  assert cell['values'] == XS and cell['metric'] == 'auc'
  assert cell['se'] == pytest.approx(np.std(XS, ddof=1) / np.sqrt(6))
  assert cell['diff_in_se'] == pytest.approx(z) and cell['verdict'] == 'better'
  assert stats.metric_cell(auc, 'a', ref, tie_se=3.0)['verdict'] == 'tie'
  assert stats.cell_text(cell) == (
    f'{np.mean(XS):.4f} +- {cell["se"]:.4f} ({d.mean():+.4f}, {z:+.1f} SE)'
  )
  # An MSE is better lower: the same numbers are 'worse'.
  mse = [{'test/mse/a': x} for x in XS]
  cell = stats.metric_cell(mse, 'a', [{'test/mse/a': y} for y in YS], 1.0)
  assert cell['verdict'] == 'worse' and not cell['higher_is_better']
  assert 'verdict' not in stats.metric_cell(mse, 'a')
  # Identical runs: no spread, a tie (not a division by zero).
  assert stats.metric_cell(auc, 'a', auc)['verdict'] == 'tie'
  with pytest.raises(SystemExit, match='no test/auc/b or test/mse/b'):
    stats.metric_cell(auc, 'b')


def test_config_diff_is_canonical_and_ignores_what_does_not_change_results():
  c = smoke.get_config()
  stored = json.loads(json.dumps(c.to_dict()))  # Tuples become lists.
  assert runner.config_diff(stored, c.to_dict()) == []
  c.progress_bar = not c.progress_bar
  c.log_every_steps += 1
  c.wandb.mode = 'offline'
  c.checkpoint.max_to_keep += 1
  c.dataset.seed += 1  # Counts.
  c.weighting_name = 'uncertainty'  # Counts, and so do its parameters.
  c.weighting.uncertainty.learning_rate *= 2
  c.weighting.gradnorm.alpha += 1  # Unused: does not count.
  assert len(runner.config_diff(stored, c.to_dict())) == 8
  assert runner.config_diff(stored, c.to_dict(), harness.IGNORED) == [
    'dataset.seed: 0 -> 1',
    'weighting.uncertainty.learning_rate: 0.01 -> 0.02',
    "weighting_name: 'equal' -> 'uncertainty'",
  ]
  # The parameters of a method chosen on either side count.
  stored['weighting']['uncertainty']['learning_rate'] = 0.02
  assert len(runner.config_diff(stored, c.to_dict(), harness.IGNORED)) == 2
  c = smoke.get_config()
  c.towers.hidden = (5,)
  assert runner.config_diff(stored, c.to_dict(), harness.IGNORED) == [
    'towers.hidden: [4] -> [5]'
  ]


def test_a_run_of_an_earlier_mtl_without_the_new_keys_is_the_same_config():
  c = smoke.get_config()
  stored = json.loads(json.dumps(c.to_dict()))
  # What an earlier mtl recorded: no wide, interaction, cross, task_loss or
  # early_stopping keys, no optimizer.wide, select_best a bool.
  for key in ('wide', 'interaction', 'cross', 'task_loss', 'early_stopping'):
    stored.pop(key)
  stored['optimizer'].pop('wide')
  stored['select_best'] = True
  assert runner.config_diff(stored, c.to_dict(), harness.IGNORED) == []
  # A new key away from its default still counts, and so does a bool that
  # means another selection.
  c.wide.enabled = True
  c.interaction = 'fm'
  assert runner.config_diff(stored, c.to_dict(), harness.IGNORED) == [
    "interaction: '(none)' -> 'fm'",
    "wide.enabled: '(none)' -> True",
  ]
  stored['select_best'] = False
  c = smoke.get_config()
  assert runner.config_diff(stored, c.to_dict(), harness.IGNORED) == [
    "select_best: 'last' -> 'first'"
  ]


@pytest.fixture
def calls(monkeypatch):
  """Counts trainer.train's calls; still trains for real."""
  from mtl.shell import trainer

  real, seen = trainer.train, []

  def counted(config, workdir):
    seen.append(config.to_dict())
    return real(config, workdir)

  monkeypatch.setattr(trainer, 'train', counted)
  return seen


def _aside(workdir):
  return sorted(workdir.parent.glob(f'{workdir.name}.stale-*'))


def test_run_reuses_the_same_config_and_reruns_another(tmp_path, calls):
  workdir = tmp_path / 'run'
  config = smoke.get_config()
  config.num_epochs = 1
  first = harness.run(config, workdir)
  assert len(calls) == 1 and first['num_epochs'] == 1
  assert json.loads((workdir / 'config.json').read_text())  # The trainer's.

  # Same config (what does not change results aside): reused, not trained.
  config.progress_bar = True
  config.log_every_steps = 3
  assert harness.run(config, workdir) == first
  assert len(calls) == 1 and not _aside(workdir)

  # Another config: the old run moved aside, whole; a new run trained.
  config.num_epochs = 2
  second = harness.run(config, workdir)
  assert len(calls) == 2 and second['num_epochs'] == 2
  (stale,) = _aside(workdir)
  assert json.loads((stale / 'results.json').read_text()) == first
  assert json.loads((workdir / 'results.json').read_text()) == second


def _fake_train(seen):
  def train(config, workdir):
    seen.append(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # As the trainer: the resolved config (the model's defaults filled in).
    (workdir / 'config.json').write_text(json.dumps(runner.resolved(config)))
    pop = config.population
    result = {'members': [{'seed': s} for s in pop.seeds or pop.size * (0,)]}
    (workdir / 'results.json').write_text(json.dumps(result))
    return result

  return train


def test_run_resumes_only_under_the_same_config(tmp_path, monkeypatch):
  from mtl.shell import trainer

  seen = []
  monkeypatch.setattr(trainer, 'train', _fake_train(seen))
  workdir = tmp_path / 'pop'
  config = smoke.get_config()
  config.population.seeds = (0, 1)
  result = harness.run(config, workdir)
  assert result == {'members': [{'seed': 0}, {'seed': 1}]}  # A population.

  # Interrupted (no results.json), same config: the trainer resumes it.
  (workdir / 'results.json').unlink()
  harness.run(config, workdir)
  assert seen == [workdir, workdir] and not _aside(workdir)

  # Interrupted, another progress bar: resumed too (it changes no result).
  (workdir / 'results.json').unlink()
  config.progress_bar = not config.progress_bar
  harness.run(config, workdir)
  assert len(seen) == 3 and not _aside(workdir)

  # Interrupted, another learning rate: not resumed, moved aside.
  (workdir / 'results.json').unlink()
  config.optimizer.learning_rate *= 2
  harness.run(config, workdir)
  assert len(seen) == 4 and len(_aside(workdir)) == 1

  # --force: a finished run of the same config is re-run, kept aside.
  harness.run(config, workdir, force=True)
  assert len(seen) == 5 and len(_aside(workdir)) == 2

  # A directory without config.json is not this config's run.
  other = tmp_path / 'other'
  other.mkdir()
  (other / 'results.json').write_text('{}')
  harness.run(config, other)
  assert len(seen) == 6 and len(_aside(other)) == 1


def test_reuse_never_trains(tmp_path, monkeypatch):
  from mtl.shell import trainer

  seen = []
  monkeypatch.setattr(trainer, 'train', _fake_train(seen))
  config = smoke.get_config()
  config.population.size = 2
  config.population.task_weights = ((1.0, 1.0), (0.5, 1.5))
  harness.run(config, tmp_path / 'w')
  other = smoke.get_config()
  other.population.seeds = (0,)
  ignore = (*harness.IGNORED, 'population')
  assert len(harness.reuse(tmp_path / 'w', other, ignore=ignore)['members'])
  other.num_epochs = 5
  with pytest.raises(SystemExit, match='num_epochs'):
    harness.reuse(tmp_path / 'w', other, ignore=ignore)
  with pytest.raises(SystemExit):
    harness.reuse(tmp_path / 'missing', other)
  assert len(seen) == 1


def test_write_results(tmp_path):
  plt = harness.pyplot()
  fig, ax = plt.subplots()
  ax.plot([0, 1], [1, 0])
  record = {'rows': [{'model': 'mmoe', 'auc': (0.94, 0.001)}]}
  md = harness.markdown_table(['model', 'auc'], [['mmoe', '0.9400']], 'lr')
  stem = harness.write_results(
    'demo', record, md, out=tmp_path / 'demo.md', figures={'_x': fig}
  )
  assert stem == tmp_path / 'demo'
  assert json.loads((tmp_path / 'demo.json').read_text()) == json.loads(
    json.dumps(record)
  )
  text = (tmp_path / 'demo.md').read_text()
  assert text.startswith('| model | auc |\n|---|---:|\n| mmoe | 0.9400 |\n')
  assert 'Produced by `python ' in text and 'CPUs' in text
  assert (tmp_path / 'demo_x.png').stat().st_size > 0
  assert harness.results_stem('demo', tmp_path) == tmp_path / 'demo'
  assert harness.results_stem('demo', None) == harness.RESULTS / 'demo'
  assert not list(tmp_path.glob('.*tmp*'))  # Atomic writes leave no temp.


def test_a_workdir_in_use_is_not_moved_aside(tmp_path, monkeypatch):
  from mtl.shell import trainer, workdir

  seen = []
  monkeypatch.setattr(trainer, 'train', _fake_train(seen))
  config = smoke.get_config()
  harness.run(config, tmp_path / 'w')
  config.seed += 1
  with workdir.WorkdirLock(tmp_path / 'w'):  # A live run holds it.
    with pytest.raises(SystemExit, match='not moved aside'):
      harness.run(config, tmp_path / 'w')
  assert len(seen) == 1 and not _aside(tmp_path / 'w')
  harness.run(config, tmp_path / 'w')
  assert len(seen) == 2 and len(_aside(tmp_path / 'w')) == 1


def test_run_all_reports_a_refused_run_as_its_line_and_goes_on(tmp_path):
  bad = smoke.get_config()
  bad.model.num_experts = -1  # Refused before any data is read.
  also_bad = smoke.get_config()
  also_bad.optimizer.learning_rate = -1.0
  jobs = [(bad, tmp_path / 'a'), (also_bad, tmp_path / 'b')]
  got = runner.run_all(jobs, refused=True)
  assert got == [
    'model.num_experts is -1, expected >= 1',
    'optimizer.learning_rate is -1.0, expected a number > 0',
  ]
  assert not (tmp_path / 'a' / 'results.json').exists()
  with pytest.raises(mtl_errors.ConfigError, match='num_experts is -1'):
    runner.run_all(jobs[:1])
