"""ESMM and AITM end to end on the Ali-CCP and AliExpress samples.

Oracle: the raw sample CSVs read with pandas: the entire-space labels the
models train on must be click AND purchase on every impression, and the CVR
task must count exactly the clicked impressions.
"""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from configs import ali_ccp, aliexpress
from mtl.shell import build
from tests import cli

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('model', ['esmm', 'aitm'])
def test_ali_ccp_entire_space_labels_match_the_raw_csv(data_dir, model):
  config = ali_ccp.get_config(model)
  ds = build.load_dataset(config)
  raw = pd.read_csv(data_dir / 'ali-ccp-sample' / 'ali_ccp_test_sample.csv')
  test = ds.splits['test']
  names = [t.name for t in ds.tasks]
  click = raw['click'].to_numpy(np.float32)
  both = (raw['click'] * raw['purchase']).to_numpy(np.float32)
  np.testing.assert_array_equal(test['labels'][names.index('click')], click)
  np.testing.assert_array_equal(test['labels'][names.index('ctcvr')], both)
  np.testing.assert_array_equal(test['mask'][names.index('ctcvr')], 1.0)
  np.testing.assert_array_equal(test['mask'][names.index('purchase')], click)
  trained = [t.name for t in ds.tasks if t.train]
  assert trained == ['click', 'ctcvr']


@pytest.mark.parametrize(
  'config_arg,module',
  [('ali_ccp.py:esmm', ali_ccp), ('aliexpress.py:aitm', aliexpress)],
)
def test_trains_from_its_config(tmp_path, data_dir, config_arg, module):
  env = cli.one_device_env()
  proc = cli.run(
    [
      f'--config=configs/{config_arg}',
      f'--workdir={tmp_path}',
      '--config.progress_bar=false',
      '--config.checkpoint.async_save=false',
      '--config.log_every_steps=1',
    ],
    env=env,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  tasks = results['tasks']
  assert tasks[:2] == ['click', 'ctcvr']
  for key, value in results['test'].items():
    assert value is not None and np.isfinite(value), key
  rows = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').open()]
  train = [r for r in rows if 'train/loss/click' in r]
  # Only the trained tasks are trained (and logged); the metric-only CVR
  # task is evaluated.
  assert all('train/loss/ctcvr' in r for r in train)
  assert not any(f'train/loss/{tasks[2]}' in r for r in train)
  assert f'test/auc/{tasks[2]}' in results['test']
  assert len(train) >= 3  # at least every dispatch
  assert train[-1]['train/loss/ctcvr'] < train[0]['train/loss/ctcvr']
