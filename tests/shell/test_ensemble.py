"""Model fusion: ensembles and soups against hand-computed averages, and a
fused population evaluated like one model."""

import json

import numpy as np
import pytest

from mtl.core import ensemble

PREDS = np.array([[0.2, 0.6, 0.9], [0.4, 0.2, 0.7], [0.3, 0.1, 0.8]])


def test_average_and_weighted_average_by_hand():
  np.testing.assert_allclose(ensemble.average(PREDS), [0.3, 0.3, 0.8])
  np.testing.assert_allclose(
    ensemble.average(PREDS, [2, 1, 1]),
    [(0.4 + 0.4 + 0.3) / 4, (1.2 + 0.2 + 0.1) / 4, (1.8 + 0.7 + 0.8) / 4],
  )


def test_rank_average_by_hand_with_ties():
  p = np.array([[0.1, 0.5, 0.5], [3.0, 2.0, 1.0]])
  # Ranks / N: [1, 2.5, 2.5] / 3 and [3, 2, 1] / 3.
  np.testing.assert_allclose(
    ensemble.rank_average(p), [(1 + 3) / 6, (2.5 + 2) / 6, (2.5 + 1) / 6]
  )


def test_fitted_weights_find_the_best_member_and_the_best_blend():
  rng = np.random.default_rng(0)
  y = rng.random(2000)
  good, bad = y + 0.1 * rng.normal(size=2000), rng.random(2000)
  w = ensemble.fit_weights(np.stack([bad, good]), y, kind='regression')
  # The least-squares blend of two, in closed form: w_bad = <g - y, g - b> /
  # |g - b|^2 (not 0: the uncorrelated member still cancels some noise).
  w_bad = (good - y) @ (good - bad) / np.sum((good - bad) ** 2)
  assert w == pytest.approx([w_bad, 1 - w_bad], abs=2e-3)
  # Two independent unbiased noises of equal size: the blend is 1/2, 1/2.
  a, b = y + 0.2 * rng.normal(size=2000), y + 0.2 * rng.normal(size=2000)
  w = ensemble.fit_weights(np.stack([a, b]), y, kind='regression')
  assert w == pytest.approx([0.5, 0.5], abs=0.05)
  # Binary: the calibrated member wins over a constant.
  yb = (rng.random(2000) < y).astype(float)
  w = ensemble.fit_weights(
    np.stack([np.clip(y, 0.01, 0.99), np.full(2000, 0.5)]), yb, kind='binary'
  )
  assert w[0] > 0.9


def tree(x):
  return {'dense': {'kernel': np.full((2, 2), x), 'bias': np.array([x, -x])}}


def test_uniform_soup_by_hand():
  soup = ensemble.uniform_soup([tree(1.0), tree(2.0), tree(6.0)])
  np.testing.assert_allclose(soup['dense']['kernel'], np.full((2, 2), 3.0))
  np.testing.assert_allclose(soup['dense']['bias'], [3.0, -3.0])


def test_greedy_soup_keeps_only_what_helps():
  # Score: closeness of the kernel to 2. Members 1, 3, 2.5, 10.
  trees = [tree(1.0), tree(3.0), tree(2.5), tree(10.0)]
  score = lambda t: -abs(t['dense']['kernel'][0, 0] - 2.0)  # noqa: E731
  soup, chosen, trace = ensemble.greedy_soup(trees, score)
  # Sorted by own score: 1 (-1), 3 (-1), 2.5 (-0.5) -> order 2, 0, 1, 3.
  # {2.5} -0.5; +1 -> 1.75 -0.25 kept; +3 -> 2.1667 -0.1667 kept; +10 no.
  assert chosen == [2, 0, 1]
  np.testing.assert_allclose(soup['dense']['kernel'], np.full((2, 2), 6.5 / 3))
  np.testing.assert_allclose(trace, [-0.5, -0.25, -1 / 6, -1 / 6])


def test_fused_population_evaluated_like_one_model(tmp_path):
  from configs import smoke
  from mtl.shell import ensemble as shell_ensemble
  from mtl.shell import trainer

  c = smoke.get_config()
  c.checkpoint.async_save = False
  c.num_epochs, c.diagnostics_every_steps, c.eval_batch_size = 1, 0, 128
  c.population.seeds = (0, 1)
  result = trainer.train(c, tmp_path / 'pop')
  group = shell_ensemble.load(c, tmp_path / 'pop')
  assert len(group) == 2
  fused = shell_ensemble.fuse(group)
  for member, got in zip(result['members'], fused['members'], strict=True):
    for key, value in member['validation'].items():
      if '/auc/' in key or '/logloss/' in key or '/mse/' in key:
        # Exact metrics of the restored params == the run's (binned AUC).
        assert got['validation'][key] == pytest.approx(value, abs=2e-4), key
  val = shell_ensemble.predict(group, 'validation')
  mean = shell_ensemble.evaluate(val.mean(0), group, 'validation')
  assert fused['mean']['validation'] == mean
  soup = shell_ensemble.evaluate(
    shell_ensemble.predict_params(
      group, ensemble.uniform_soup(group.params), 'validation'
    ),
    group,
    'validation',
  )
  assert fused['uniform_soup']['validation'] == soup
  assert set(fused['greedy_soup']['ingredients']) <= set(group.names)
  # Separate workdirs join as one group: here the same two twice.
  both = shell_ensemble.combine(group, group)
  assert len(both) == 4 and not isinstance(both.model, list)
  np.testing.assert_allclose(
    shell_ensemble.predict(both, 'validation').mean(0), val.mean(0), rtol=1e-6
  )
  path = shell_ensemble.write(tmp_path / 'fused', 'mean', fused['mean'])
  assert json.loads(path.read_text())['name'] == 'mean'
