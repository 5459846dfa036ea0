"""What the tools after training read of a run's config, typed.

Oracle: hand-written config.json files and configs, and the values written
into them: the typed settings hold those values (a run recorded before a
key: its documented default), and nothing else is read.
"""

import json

import pytest

from configs import smoke
from mtl.core import metrics_registry
from mtl.errors import WorkdirError
from mtl.shell import restored_config, settings


def _workdir(tmp_path, **values):
  (tmp_path / 'config.json').write_text(json.dumps(values))
  return tmp_path


def test_eval_settings_of_a_recorded_config(tmp_path):
  config = restored_config.read_config(
    _workdir(
      tmp_path,
      eval_batch_size=512,
      num_auc_bins=77,
      eval_metrics=['gauc', 'mae'],
      select_best='per_task',
      model_name='ple',
    )
  )
  got = restored_config.eval_settings(config)
  assert got == restored_config.EvalSettings(
    eval_batch_size=512,
    num_auc_bins=77,
    eval_metrics=('gauc', 'mae'),
    mode='per_task',
    model_name='ple',
  )


def test_a_run_recorded_before_the_keys_gets_their_defaults(tmp_path):
  """No eval_metrics key: the registry's default; select_best recorded as
  a bool (an old workdir): True is 'first', False 'last'."""
  for old, mode in ((True, 'first'), (False, 'last')):
    config = restored_config.read_config(
      _workdir(
        tmp_path,
        eval_batch_size=8,
        num_auc_bins=10,
        select_best=old,
        model_name='mmoe',
      )
    )
    got = restored_config.eval_settings(config)
    assert got.eval_metrics == metrics_registry.DEFAULT
    assert got.mode == mode


def test_a_workdir_without_config_json_is_one_line(tmp_path):
  with pytest.raises(WorkdirError, match='has no config.json'):
    restored_config.read_config(tmp_path)
  (tmp_path / 'config.json').write_text('{')
  with pytest.raises(WorkdirError, match='is not JSON'):
    restored_config.read_config(tmp_path)


def test_the_run_record_holds_the_configs_values():
  c = smoke.get_config('mmoe,synthetic')
  c.wandb.group = 'g'
  c.profile.steps = '3:9'
  s = settings.from_config(c)
  assert s.loop.profile_steps == (3, 9)
  r = s.record
  assert r.config == c.to_dict()
  assert r.wandb == c.to_dict()['wandb'] and r.wandb['group'] == 'g'
  assert r.model == {
    k: v for k, v in c.to_dict()['model'].items() if v is not None
  }
  assert None not in r.model.values()
  assert r.model['num_experts'] == 2 and 'hidden' not in r.model  # smoke
  assert (r.model_name, r.dataset_name) == ('mmoe', 'synthetic')
  assert r.dataset == c.to_dict()['dataset']
  assert r.weighting_name == c.weighting_name
  assert r.parallel_backend == c.parallel.backend
  c.profile.steps = ''
  assert settings.from_config(c).loop.profile_steps is None
