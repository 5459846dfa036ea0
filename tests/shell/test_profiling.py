"""config.profile.steps (mtl/shell/profiling.py) and compilation in the loop.

Oracles: the trace file as jax's own reader parses it (ProfileData, the
XSpace TensorBoard reads), gzip + JSON for the Perfetto file, the dispatch
boundaries worked out by hand, and jax's compile log (`jax.log_compiles`)
for which programs a run compiles in which epoch.
"""

import gzip
import json
import re

import jax
import ml_collections
import pytest

from configs import smoke
from mtl.errors import ConfigError
from mtl.shell import profiling, trainer, validate
from tests import compile_log


@pytest.mark.parametrize(
  'value, expected', [('', None), ('0:1', (0, 1)), ('20:40', (20, 40))]
)
def test_parse_steps(value, expected):
  assert profiling.parse_steps(value) == expected


@pytest.mark.parametrize('value', ['3:3', '4:2', '-1:2', '1', '1:', 'a:b'])
def test_bad_steps_are_one_config_error_line_naming_the_key(value):
  config = smoke.get_config()
  config.profile.steps = value
  with pytest.raises(ConfigError) as err:
    validate.check_config(config)
  text = str(err.value)
  assert '\n' not in text
  assert text.startswith(f'profile.steps is {value!r}, expected')
  assert '0 <= A < B' in text


def test_steps_must_be_a_string():
  config = smoke.get_config().to_dict()
  config['profile']['steps'] = 3
  with pytest.raises(ConfigError, match=r'profile.steps is 3 \(an int\)'):
    validate.check_config(ml_collections.ConfigDict(config))


def test_census_trace_is_written_and_readable(
  tmp_path, census_tfds_dir, capsys
):
  config = smoke.get_config('mmoe,census')
  config.dataset.data_dir = str(census_tfds_dir)
  config.update(
    dict(
      batch_size=8192,
      num_epochs=1,
      eval_batch_size=16384,
      steps_per_dispatch=1,  # The trace starts after the compiling step 0.
      diagnostics_every_steps=0,
    )
  )
  config.checkpoint.async_save = False
  config.profile.steps = '1:3'
  trainer.train(config, tmp_path / 'run')
  (line,) = [
    x for x in capsys.readouterr().err.splitlines() if 'profile of' in x
  ]
  assert line.startswith('profile of steps 1:3 written to ')
  assert 'tensorboard --logdir' in line and 'ui.perfetto.dev' in line
  (run,) = (tmp_path / 'run' / 'profile' / 'plugins' / 'profile').iterdir()
  assert str(run) in line
  (xplane,) = run.glob('*.xplane.pb')
  assert xplane.stat().st_size > 0
  data = jax.profiler.ProfileData.from_file(str(xplane))
  host = data.find_plane_with_name('/host:CPU')
  events = [e.name for line in host.lines for e in line.events]
  # Steps 1 and 2: two dispatches of the engine (the python thread), and
  # XLA's executions of the compiled step.
  assert (
    sum(bool(re.fullmatch(r'\$engines\.py:\d+ run', e)) for e in events) == 2
  )
  assert 'PjitFunction(run)' in events
  assert 'ThunkExecutor::Execute' in events
  perfetto = (run / 'perfetto_trace.json.gz').read_bytes()
  assert json.loads(gzip.decompress(perfetto))['traceEvents']


@pytest.mark.parametrize('epochs', [3, 10])
def test_a_trace_past_the_last_step_stops_when_training_does(
  tmp_path, capsys, epochs
):
  """Dispatches of 4 steps from step 0; '5:50' starts before [4, 8). With 3
  epochs of 4 steps training ends at step 12 and the trace with it; with
  10 the loop stops at 12 (as early stopping does) and close() ends it.
  Another process than 0 writes nothing."""
  add = jax.jit(lambda x, k: x + k)
  for enabled in (False, True):
    workdir = tmp_path / str(enabled)
    run = profiling.Profiled(
      lambda x, perms, first, k: (add(x, k), {}),
      (5, 50) if enabled else None,
      workdir,
      0,
      4 * epochs,
    )
    x = jax.numpy.zeros(())
    for first in range(0, 12, 4):
      x, _ = run(x, None, first, 4)
    if epochs == 10:
      assert 'profile of' not in capsys.readouterr().err  # Still tracing.
    run.close()
    assert float(x) == 12.0
    err = capsys.readouterr().err
    assert (workdir / 'profile').exists() == enabled
    if enabled:
      assert err.startswith(
        'profile of steps 4:12 (asked 5:50; training ended at step 12) '
      )
      (run_dir,) = (workdir / 'profile' / 'plugins' / 'profile').iterdir()
      assert list(run_dir.glob('*.xplane.pb'))
    else:
      assert err == ''


def test_nothing_is_compiled_again_after_the_first_epoch(tmp_path, capsys):
  """Dispatches of 3, 3 and 2 steps: epoch 1 compiles the scanned step for
  both lengths; epoch 2 compiles only the first copy of the best epoch's
  params (made after epoch 1's evaluation); epoch 3 compiles nothing. A
  trace of steps 10:12 is rounded out to epoch 2's dispatches [8, 11) and
  [11, 14)."""
  config = smoke.get_config()  # 512 rows, batch 64: 8 steps an epoch.
  config.update(dict(num_epochs=3, steps_per_dispatch=3))
  config.checkpoint.async_save = False
  config.profile.steps = '10:12'
  epochs, err = compile_log.compiles_per_epoch(config, tmp_path / 'run', capsys)
  assert 'profile of steps 8:14 (asked 10:12, rounded to dispatch bou' in err
  first, second, third = epochs[:3]
  # The scanned step for k = 3 and k = 2, and the evaluation.
  assert first.count('jit(run)') >= 3, first
  assert set(second) <= {'jit(copy)'}, second
  assert third == [], third


def test_host_mode_compiles_nothing_after_the_first_epoch(tmp_path, capsys):
  """input_mode='host' (numpy batches, a jitted step per dispatch): after
  epoch 1 compiled the step for each dispatch length and the evaluation,
  epoch 2 compiles at most the best params' copy and epoch 3 nothing."""
  config = smoke.get_config()  # 512 rows, batch 64: 8 steps an epoch.
  config.update(dict(num_epochs=3, steps_per_dispatch=3, input_mode='host'))
  config.checkpoint.async_save = False
  epochs, _ = compile_log.compiles_per_epoch(config, tmp_path / 'run', capsys)
  compile_log.assert_compiled_in_the_first_epoch_only(epochs)
