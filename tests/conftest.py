"""Test setup: 8 emulated CPU devices, set before JAX is imported anywhere.

Tests that need another device count, or several processes, start a
subprocess with their own XLA_FLAGS.
"""

import os
import pathlib

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('WANDB_SILENT', 'true')

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def data_dir() -> pathlib.Path:
  """The directory of real raw datasets ($MTL_DATA_DIR, as .ci/run sets it)."""
  value = os.environ.get('MTL_DATA_DIR')
  if not value:
    pytest.fail(
      'MTL_DATA_DIR is not set: point it at the raw datasets '
      '(for example MTL_DATA_DIR=../shared/data), as .ci/run does'
    )
  path = pathlib.Path(value).resolve()
  if not path.is_dir():
    pytest.fail(f'MTL_DATA_DIR={value} is not a directory')
  return path
