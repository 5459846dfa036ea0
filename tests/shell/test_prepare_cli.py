"""`mtl-prepare` (mtl/shell/prepare.py): a config's dataset prepared
without training, in process or on Apache Beam with the same bytes, and
its mistakes as one line with exit code 2."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = str(REPO / 'configs' / 'movielens_table.py')


def prepare(*args):
  return subprocess.run(
    [sys.executable, '-c', 'from mtl.shell.prepare import run; run()', *args],
    capture_output=True,
    text=True,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
    timeout=600,
  )


def shards(data_dir: pathlib.Path) -> dict:
  return {
    p.name: p.read_bytes()
    for p in sorted(data_dir.rglob('*'))
    if 'array_record' in p.name or p.name == 'metadata.json'
  }


def test_prepares_in_process_and_on_beam_the_same_bytes(tmp_path):
  one = prepare(f'--config={CONFIG}', f'--config.dataset.data_dir={tmp_path}/a')
  assert one.returncode == 0, one.stderr
  (line,) = one.stdout.strip().splitlines()[-1:]
  assert line.startswith(f'mtl-prepare: {tmp_path}/a/table/movielens_table-')
  assert '(train 80,000, validation 10,000, test 10,000 rows)' in line
  two = prepare(
    f'--config={CONFIG}',
    f'--config.dataset.data_dir={tmp_path}/b',
    '--beam_option=--direct_num_workers=2',
    '--beam_option=--direct_running_mode=multi_processing',
  )
  assert two.returncode == 0, two.stderr
  assert 'on Beam' in two.stdout
  a, b = shards(tmp_path / 'a'), shards(tmp_path / 'b')
  assert len(a) >= 4 and a == b


def test_mistakes_are_one_line(tmp_path):
  bad = prepare(
    f'--config={CONFIG}',
    f'--config.dataset.data_dir={tmp_path}',
    '--beam_option=--direct_num_wrokers=2',
  )
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1] == (
    'mtl-prepare: error: dataset.beam_options has direct_num_wrokers, '
    "expected flags of Beam's PipelineOptions (e.g. --runner, "
    '--direct_num_workers)'
  )
  census = prepare(
    f'--config={REPO / "configs" / "census_mmoe.py"}',
    '--beam_option=--direct_num_workers=2',
  )
  assert census.returncode == 2
  assert census.stderr.strip().splitlines()[-1] == (
    "mtl-prepare: error: --beam_option is set for dataset 'census_income', "
    'which is not prepared by the table builder; expected a table dataset '
    "('table' or a config built on it)"
  )
  typo = prepare(f'--config={CONFIG}', '--config.dataset.chunksiez=5')
  assert typo.returncode == 2
  assert typo.stderr.startswith('mtl-prepare: error: ')
  assert len(typo.stderr.strip().splitlines()) == 1
