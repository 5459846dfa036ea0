"""The bad-input corpus: each case is a one-line error naming the key, file or
row, what was found and what was expected, and is an mtl.errors type (so the
command line prints it as one line); none touches a checkpoint.

Every config case runs `trainer.train` against the same workdir, which
holds a finished run's checkpoints; after each case the checkpoint files must
be byte-for-byte what they were. Command-line cases (flag typos, wrong types)
are in tests/shell/test_main.py; these run in-process, on the 8 emulated
devices of
tests/conftest.py, so the device-count cases are real.
"""

import hashlib
import logging
import pathlib

import numpy as np
import pytest

from configs import smoke
from mtl.core.tasks import Task
from mtl.data.dataset import Dataset, check_split
from mtl.errors import DataError, MtlError
from mtl.shell import finite, trainer


def _config(**overrides):
  config = smoke.get_config('mmoe')
  config.checkpoint.async_save = False
  with config.unlocked():  # As a config file may set any key.
    for key, value in overrides.items():
      node = config
      *parents, leaf = key.split('.')
      for p in parents:
        node = node[p]
      node[leaf] = value
  return config


def _fingerprint(workdir: pathlib.Path) -> dict[str, str]:
  return {
    str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(workdir.rglob('*'))
    if p.is_file() and 'checkpoints' in p.parts
  }


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A workdir with a finished smoke run and its checkpoints."""
  workdir = tmp_path_factory.mktemp('finished')
  trainer.train(_config(), workdir)
  assert (workdir / 'checkpoints').is_dir()
  return workdir


CASES = {
  'unknown model': (
    dict(model_name='mmeo'),
    "unknown model 'mmeo': expected one of",
  ),
  'unknown weighting': (
    dict(weighting_name='gradnrm'),
    "unknown weighting 'gradnrm'",
  ),
  'unknown dataset': (
    dict(dataset_name='census'),
    "unknown dataset 'census'",
  ),
  'unknown backend': (
    {'parallel.backend': 'shardmap', 'parallel.num_devices': 8},
    "unknown parallel backend 'shardmap': expected one of pmap, shard_map "
    "(did you mean 'shard_map'?)",
  ),
  'batch not divisible by the devices': (
    {'parallel.num_devices': 8, 'input_mode': 'host', 'batch_size': 60},
    'batch_size 60 is not divisible by the 8 devices; use a multiple of 8',
  ),
  'eval batch not divisible by the devices': (
    {'parallel.num_devices': 3, 'input_mode': 'host', 'batch_size': 63},
    'eval_batch_size 64 is not divisible by the 3 devices',
  ),
  'more devices than there are': (
    {'parallel.num_devices': 16},
    'parallel.num_devices is 16, expected 0 (all) or 1..8',
  ),
  'device input mode with several devices': (
    {'parallel.num_devices': 8},
    "input_mode is 'device' with 8 devices, expected 'host'",
  ),
  'task and weight lengths differ': (
    {'weighting_name': 'fixed', 'weighting.fixed.weights': (1.0, 2.0, 3.0)},
    "weighting 'fixed': 3 weights for 2 tasks, expected 2",
  ),
  'negative learning rate': (
    {'optimizer.learning_rate': -0.1},
    'optimizer.learning_rate is -0.1, expected a number > 0',
  ),
  'unknown optimizer': (
    {'optimizer.name': 'adamm'},
    "optimizer.name 'adamm' is not one of",
  ),
  'zero epochs': (dict(num_epochs=0), 'num_epochs is 0, expected >= 1'),
  'zero steps per dispatch': (
    dict(steps_per_dispatch=0),
    'steps_per_dispatch is 0, expected >= 1',
  ),
  'unknown input mode': (
    dict(input_mode='gpu'),
    "unknown input_mode 'gpu'",
  ),
  'negative checkpoint interval': (
    {'checkpoint.every_steps': -5},
    'checkpoint.every_steps is -5, expected >= 0',
  ),
  'unknown model keyword': (
    {'model.num_expert': 3},
    'model.num_expert is not a keyword of any architecture (did you mean '
    "'model.num_experts'?)",
  ),
  'other model shape in the workdir': (
    {'model.expert_hidden': (16,)},
    'step 16 does not match the model: '
    'params/backbone/experts/mlp/Dense_0/bias has shape (2, 8), expected '
    '(2, 16)',
  ),
  'init_from a directory without checkpoints': (
    {'init_from': '/nonexistent/run'},
    'init_from /nonexistent/run holds no checkpoints/ directory',
  ),
  'wrong synthetic size': (
    {'dataset.n_train': 0},
    'batch_size 64 exceeds the 0 training rows',
  ),
  'negative diagnostics interval': (
    {'diagnostics_every_steps': -1},
    'diagnostics_every_steps is -1, expected >= 0',
  ),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_config_case_is_one_line_and_touches_no_checkpoint(name, finished):
  overrides, message = CASES[name]
  before = _fingerprint(finished)
  # A user error by type (mtl.errors): the CLI prints it as one line.
  # Past the workdir's check that the config is the recorded one, to the
  # case's own error.
  config = _config(workdir_allow_changes=True, **overrides)
  with pytest.raises(MtlError) as err:
    trainer.train(config, finished)
  text = str(err.value)
  assert '\n' not in text, text
  assert message in text, text
  assert _fingerprint(finished) == before


def _dataset():
  return Dataset(
    name='toy',
    tasks=(Task('click'), Task('rating', kind='regression')),
    dense_names=('age', 'price'),
    sparse_names=('item',),
    vocab_sizes=(4,),
    splits={},
  )


def _split(n=6):
  return {
    'dense': np.zeros((n, 2), np.float32),
    'sparse': np.zeros((n, 1), np.int32),
    'labels': np.stack([np.arange(n) % 2, np.ones(n)]).astype(np.float32),
    'mask': np.ones((2, n), np.float32),
  }


def test_nan_in_a_feature_names_the_feature_and_row():
  split = _split()
  split['dense'][4, 1] = np.nan
  with pytest.raises(DataError) as err:
    check_split(_dataset(), 'train', split)
  assert str(err.value) == (
    "dataset 'toy' split 'train': dense feature 'price' row 4 is nan, "
    'expected a finite number'
  )


def test_non_binary_label_of_a_binary_task():
  split = _split()
  split['labels'][0, 3] = 2.0
  with pytest.raises(DataError) as err:
    check_split(_dataset(), 'validation', split)
  assert str(err.value) == (
    "dataset 'toy' split 'validation': task 'click' is binary but has label "
    '2.0, expected 0 or 1'
  )


def test_categorical_id_outside_its_vocabulary():
  split = _split()
  split['sparse'][2, 0] = 7
  with pytest.raises(DataError) as err:
    check_split(_dataset(), 'train', split)
  assert str(err.value) == (
    "dataset 'toy' split 'train': sparse feature 'item' row 2 has id 7, "
    'expected [0, 4)'
  )


def test_truncated_latest_checkpoint_resumes_from_the_previous(
  tmp_path, caplog
):
  """A file of the newest checkpoint cut short: the next run warns, naming
  it, resumes from the one before, and deletes nothing."""
  config = _config(**{'checkpoint.every_steps': 4})
  config.checkpoint.max_to_keep = 3
  trainer.train(config, tmp_path)
  ckpts = tmp_path / 'checkpoints'
  steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
  assert steps == [8, 12, 16]
  biggest = max(
    (p for p in (ckpts / '16').rglob('*') if p.is_file()),
    key=lambda p: p.stat().st_size,
  )
  biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
  before = sorted(str(p) for p in ckpts.rglob('*'))

  config.num_epochs = 3  # 8 more steps from step 12: 24.
  config.checkpoint.max_to_keep = 10  # So retention removes nothing.
  with caplog.at_level(logging.WARNING):
    results = trainer.train(config, tmp_path)
  assert results['resumed_from_step'] == 12
  assert results['steps'] == 24
  warned = [r.getMessage() for r in caplog.records if 'corrupt' in r.message]
  assert any(str(ckpts / '16') in m for m in warned), warned
  after = {str(p) for p in ckpts.rglob('*')}
  assert set(before) <= after, 'a checkpoint file was removed'


def test_non_finite_loss_names_task_and_step_and_keeps_the_checkpoint(
  tmp_path,
):
  # An absurd learning rate makes the losses overflow after a few steps.
  # Host batches: one step per dispatch, a checkpoint after every step.
  config = _config(**{'checkpoint.every_steps': 1, 'input_mode': 'host'})
  config.optimizer.learning_rate = 1e30
  config.optimizer.schedule = 'constant'
  with pytest.raises(finite.NonFinite) as err:
    trainer.train(config, tmp_path)
  text = str(err.value)
  assert '\n' not in text
  assert text.startswith('non-finite training loss ')
  assert "for task 'y" in text and ' at step ' in text
  bad_step = int(text.split(' at step ')[1].split()[0])
  saved = sorted(
    int(p.name)
    for p in (tmp_path / 'checkpoints').iterdir()
    if p.name.isdigit()
  )
  # Every checkpoint left is of a step before the first bad one.
  assert saved and max(saved) < bad_step, (saved, bad_step)
  assert text.endswith(f'the checkpoint of step {max(saved)} is kept')
