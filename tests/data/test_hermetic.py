"""The suite's caches live under pytest's temporary directory (conftest.py)."""

import os
import pathlib
import subprocess
import sys
import tempfile

import tensorflow_datasets as tfds

from mtl.data import census_income_builder as cib


def test_tfds_data_dir_is_under_the_pytest_temp_root(tmp_path_factory):
  root = tmp_path_factory.getbasetemp().resolve()
  value = os.environ.get('TFDS_DATA_DIR')
  assert value, 'TFDS_DATA_DIR is not set for the session'
  path = pathlib.Path(value).resolve()
  assert path.is_relative_to(root), (path, root)
  # What a loader given no data_dir uses: TFDS's default, in this process
  # (imported before the session started) and in a subprocess.
  assert pathlib.Path(tfds.core.constants.DATA_DIR).resolve() == path
  builder = cib.CensusIncome(file_format='array_record')
  assert pathlib.Path(builder.data_dir).resolve().is_relative_to(path)
  child = subprocess.run(
    [
      sys.executable,
      '-c',
      'import tensorflow_datasets as t; print(t.core.constants.DATA_DIR)',
    ],
    capture_output=True,
    text=True,
    check=True,
  )
  assert pathlib.Path(child.stdout.strip()).resolve() == path
  for name in ('TMPDIR', 'WANDB_DIR', 'WANDB_CACHE_DIR', 'WANDB_CONFIG_DIR'):
    assert pathlib.Path(os.environ[name]).resolve().is_relative_to(root), name
  assert pathlib.Path(tempfile.gettempdir()).resolve().is_relative_to(root)
