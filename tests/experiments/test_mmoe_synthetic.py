"""experiments/mmoe_synthetic.py: Fig. 2 helper, learning-rate choice, claims.

Oracles: numpy's corrcoef of the raw labels the dataset loader generates
(Fig. 2); hand-computed means for the learning-rate choice.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

from mtl.data import synthetic

REPO = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
  'mmoe_synthetic', REPO / 'experiments' / 'mmoe_synthetic.py'
)
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)

# Not the loader's defaults: the helper must pass the generator through.
GENERATOR = dict(c=1.5, m=4, alpha=None, beta=None, d=20, noise_std=0.1, seed=7)


def test_label_correlation_is_the_pearson_of_the_training_labels():
  ps = [0.5, 0.9, 1.0]
  got = exp.label_correlation(ps, GENERATOR, n=4_000)
  for p, r in zip(ps, got, strict=True):
    ds = synthetic.load_synthetic(
      p=p, n_train=4_000, n_validation=2, n_test=2, **GENERATOR
    )
    y1, y2 = ds.splits['train']['labels'].astype(np.float64)
    assert r == pytest.approx(np.corrcoef(y1, y2)[0, 1], abs=1e-6)
  # p = 1: identical tasks, only the noise (std 0.1, label variance ~4)
  # separates the labels.
  assert 0.99 < got[-1] < 1.0
  assert got[0] < got[1] < got[2]


def member(seed, lr, y1, y2):
  return {
    'seed': seed,
    'learning_rate': lr,
    'validation': {'val/mse/y1': y1, 'val/mse/y2': y2},
    'test': {'test/mse/y1': y1 + 1, 'test/mse/y2': y2 + 1},
  }


def test_choose_lr_averages_both_tasks_over_seeds_then_p():
  runs = {
    # lr 1e-3 wins at p=0.5 by 1.0, loses at p=0.9 by 1.5 (its second seed).
    0.5: {
      'members': [
        member(0, 1e-3, 1.0, 1.0),
        member(1, 1e-3, 1.0, 1.0),
        member(0, 1e-2, 2.0, 2.0),
        member(1, 1e-2, 2.0, 2.0),
      ]
    },
    0.9: {
      'members': [
        member(0, 1e-3, 1.0, 1.0),
        member(1, 1e-3, 4.0, 4.0),
        member(0, 1e-2, 1.0, 1.0),
        member(1, 1e-2, 1.0, 1.0),
      ]
    },
  }
  lr, score = exp.choose_lr(runs)
  assert score == {1e-3: pytest.approx(1.75), 1e-2: pytest.approx(1.5)}
  assert lr == 1e-2
  # Both tasks count: on y1 alone lr 1e-3 would win here (1.25 vs 1.5).
  for m in runs[0.5]['members']:
    if m['learning_rate'] == 1e-3:
      m['validation'] = {'val/mse/y1': 0.0, 'val/mse/y2': 3.0}
  lr, score = exp.choose_lr(runs)
  assert score == {1e-3: pytest.approx(2.0), 1e-2: pytest.approx(1.5)}
  assert lr == 1e-2
  assert exp.final_losses(runs[0.9], 1e-3) == {0: 2.0, 1: 5.0}


def test_orderings():
  ps = [0.5, 0.9, 1.0]

  def table(means, std):
    return {
      k: {
        p: {'mean': v, 'std': std[k], 'n': 20}
        for p, v in zip(ps, vs, strict=True)
      }
      for k, vs in means.items()
    }

  paper = table(
    {
      'mmoe': [0.08, 0.08, 0.07],
      'omoe': [0.15, 0.12, 0.08],
      'shared_bottom': [0.25, 0.22, 0.20],
    },
    {'mmoe': 0.01, 'omoe': 0.02, 'shared_bottom': 0.05},
  )
  assert all(v['holds'] for v in exp.orderings(paper, ps).values())
  swapped = table(
    {
      'mmoe': [0.15, 0.12, 0.07],
      'omoe': [0.08, 0.08, 0.10],
      'shared_bottom': [0.25, 0.22, 0.20],
    },
    {'mmoe': 0.01, 'omoe': 0.06, 'shared_bottom': 0.05},
  )
  got = {k: v['holds'] for k, v in exp.orderings(swapped, ps).items()}
  assert got == {
    'MMoE < OMoE < Shared-Bottom at p=0.5': False,
    'MMoE < OMoE < Shared-Bottom at p=0.9': False,
    'MMoE ~ OMoE at p=1.0': False,
    'MMoE nearly flat across p': False,
    "Shared-Bottom's spread over seeds the widest (std, Fig. 5)": False,
  }


def test_dispatch_steps_divide_the_epoch():
  assert exp.dispatch_steps(195) == 39
  assert exp.dispatch_steps(192) == 64
  assert exp.dispatch_steps(67) == 1
