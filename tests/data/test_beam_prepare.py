"""A table prepared on Apache Beam (mtl/data/beam_prepare.py) is the table
the in-process builder prepares, byte for byte: every array_record shard
and the metadata (vocabularies, moments, history tails), for every
feature kind and split rule, one worker or two; a bad row is the same
one-line DataError and leaves nothing prepared; a run killed half way
prepares again cleanly. The in-process builder is the oracle (itself
checked value by value against pandas in test_table.py)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from mtl.data import DATASETS
from mtl.errors import ConfigError, DataError
from tests.data.test_table import interactions

ONE = ('--direct_num_workers=1',)
TWO = ('--direct_num_workers=2', '--direct_running_mode=multi_processing')


def log(n=900, seed=0) -> pd.DataFrame:
  """test_table's interactions, with a coded column (for `extract`), a
  sequence of item ids (for `shared_with`) and a divisor."""
  df = interactions(n, seed)
  rng = np.random.default_rng(seed + 1)
  df['code'] = [f'{c}{k}' for k, c in enumerate(rng.choice(list('abc'), n))]
  df['recent'] = [
    '|'.join(map(str, rng.integers(0, 80, rng.integers(0, 4))))
    for _ in range(n)
  ]
  df['length'] = rng.integers(5, 60, n)
  return df


FEATURES = {
  'user': {'kind': 'categorical'},
  'item': {'kind': 'categorical', 'min_count': 3},
  'brand': {'kind': 'categorical', 'hash_buckets': 8},
  'weight': {'kind': 'dense', 'normalize': 'standard'},
  'letter': {'kind': 'categorical', 'column': 'code', 'extract': '^(.)'},
  'price': {
    'kind': 'dense',
    'normalize': 'log1p_standard',
    'missing': 'mean',
    'missing_indicator': True,
  },
  'tags': {'kind': 'sequence', 'max_len': 3, 'min_count': 2},
  'recent': {'kind': 'sequence', 'max_len': 2, 'shared_with': 'item'},
  'history': {
    'kind': 'history',
    'user': 'user',
    'item': 'item',
    'time': 'ts',
    'max_len': 4,
  },
  'user_rates': {
    'kind': 'count',
    'key': 'user',
    'time': 'ts',
    'labels': ('click',),
  },
  's': {'kind': 'session', 'user': 'user', 'time': 'ts', 'gap': 30},
}
TASKS = {
  'click': {'label': 'click'},
  'buy': {'label': 'buy', 'where': 'click == 1'},
  'dwell': {
    'label': 'dwell',
    'kind': 'regression',
    'transform': 'log1p',
    'scale': 'standard',
  },
  'rate': {
    'label': 'dwell',
    'divide_by': 'length',
    'kind': 'regression',
    'scale': 'center',
  },
  'goes_on': {'label': 's.continues'},
}
SPLITS = {
  'random': {'split': 'random'},
  'time': {'split': 'time', 'time_column': 'ts'},
  'user_last': {
    'split': 'user_last',
    'time_column': 'ts',
    'user_column': 'user',
    'last_n': 2,
  },
  'files': {'split': 'files', 'stratify': ('click',)},
}


def write_files(root, rule: str, fmt: str, df=None) -> dict:
  """The log (as CSV or Parquet; rule 'files': train and test files) and
  its item side table; the table's keywords."""
  df = log() if df is None else df
  items = pd.DataFrame(
    {
      'item': np.arange(80),
      'brand': [f'b{k % 11}' for k in range(80)],
      'weight': np.linspace(1, 5, 80).round(2),
    }
  )
  items.to_csv(root / 'items.csv', index=False)

  def save(frame, name):
    path = root / f'{name}.{fmt}'
    if fmt == 'parquet':
      frame.to_parquet(path, row_group_size=97)  # Groups cut across chunks.
    else:
      frame.to_csv(path, index=False)
    return str(path)

  kw = {**SPLITS[rule]}
  if rule == 'files':
    kw['path'] = save(df.iloc[:700], 'train')
    kw['test_path'] = save(df.iloc[700:], 'test')
  else:
    kw['path'] = save(df, 'log')
  kw['joins'] = {'items': {'path': str(root / 'items.csv'), 'on': 'item'}}
  return kw


def prepare(root, name, kw, beam_options=None, chunksize=64):
  ds = DATASETS['table'](
    features=FEATURES,
    tasks=TASKS,
    task_order=('click',),
    data_dir=str(root / name),
    chunksize=chunksize,
    beam_options=beam_options,
    **kw,
  )
  return ds, prepared_files(root / name)


def prepared_files(data_dir) -> dict:
  """{name: bytes} of every shard and metadata.json; dataset_info.json's
  splits."""
  out = {}
  for f in sorted(data_dir.rglob('1.0.0/*')):
    if 'array_record' in f.name or f.name == 'metadata.json':
      out[f.name] = f.read_bytes()
    if f.name == 'dataset_info.json':
      splits = json.loads(f.read_text())['splits']
      out['splits'] = [
        (s['name'], [int(n) for n in s['shardLengths']]) for s in splits
      ]
  return out


@pytest.mark.parametrize(
  'rule,fmt',
  [('random', 'csv'), ('time', 'parquet'), ('user_last', 'csv'),
   ('files', 'parquet')],
)  # fmt: skip
def test_beam_writes_the_in_process_bytes(tmp_path, rule, fmt):
  kw = write_files(tmp_path, rule, fmt)
  ds, want = prepare(tmp_path, 'in_process', kw)
  _, got = prepare(tmp_path, 'beam', kw, ONE)
  # 900 rows in records of 64: several records and shards per split.
  assert sum(n for _, lengths in want['splits'] for n in lengths) >= 14
  assert got.keys() == want.keys()
  for name in want:
    assert got[name] == want[name], name
  # Every kind is in the layout: the equality covers them all.
  assert {'brand', 'letter', 'recent[1]', 'history[3]'} <= set(ds.sparse_names)
  assert {'weight', 'price_missing', 'user_rates.click'} <= set(ds.dense_names)


def test_one_and_two_workers_write_the_same_bytes(tmp_path):
  kw = write_files(tmp_path, 'user_last', 'parquet')
  _, want = prepare(tmp_path, 'in_process', kw, chunksize=32)
  _, two = prepare(tmp_path, 'two', kw, TWO, chunksize=32)
  assert two == want
  shards = [k for k in want if 'array_record' in k and 'train' in k]
  assert len(shards) >= 2  # Shards written by different workers.


def test_a_label_copy_is_caught_on_the_beam_output(tmp_path):
  df = log()
  df['code'] = np.where(df.click == 1, 'y1', 'x0')  # The click, as letters.
  kw = write_files(tmp_path, 'random', 'csv', df)
  errors = []
  for name, options in (('in_process', None), ('beam', ONE)):
    with pytest.raises(ValueError) as e:
      prepare(tmp_path, name, kw, options)
    errors.append(str(e.value))
  assert errors[0] == errors[1]
  assert (
    "feature 'letter' is a deterministic function of the label" in (errors[0])
  )


@pytest.mark.parametrize('row', [10, 8])
def test_a_bad_row_is_the_same_one_line_error(tmp_path, row):
  # Row 10 is a training row (found while fitting), row 8 a validation
  # row (found while encoding) of the random split.
  order = np.random.default_rng(0).permutation(900)
  assert (row in order[:90]) == (row == 8) and row not in order[90:180]
  df = log().astype({'price': object})
  df.loc[row, 'price'] = 'n/a'
  kw = write_files(tmp_path, 'random', 'csv', df)
  errors = []
  for name, options in (('in_process', None), ('beam', TWO)):
    with pytest.raises(DataError) as e:
      prepare(tmp_path, name, kw, options)
    errors.append(str(e.value))
    # Nothing a later run would take as prepared.
    assert not list((tmp_path / name).rglob('dataset_info.json'))
  assert errors[0] == errors[1]
  assert errors[0] == (
    f"{kw['path']}: row {row + 1} column 'price' is 'n/a', expected a "
    'finite number'
  )
  assert '\n' not in errors[0]
  # Fixed, the table prepares on Beam as in process.
  kw = write_files(tmp_path, 'random', 'csv')
  _, want = prepare(tmp_path, 'in_process', kw)
  _, got = prepare(tmp_path, 'beam', kw, ONE)
  assert got == want


KILLED = """
import sys
from mtl.data import DATASETS
sys.path[:0] = [{tests!r}, {repo!r}]
from test_beam_prepare import FEATURES, TASKS
DATASETS['table'](
  path={path!r}, features=FEATURES, tasks=TASKS, task_order=('click',),
  data_dir={data_dir!r}, chunksize=32, beam_options={options!r},
  joins={{'items': {{'path': {items!r}, 'on': 'item'}}}})
"""


def test_a_killed_run_prepares_again_cleanly(tmp_path):
  kw = write_files(tmp_path, 'random', 'parquet', log(3000))
  data_dir = tmp_path / 'beam'
  script = textwrap.dedent(
    KILLED.format(
      tests=os.path.dirname(__file__),
      repo=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
      path=kw['path'],
      data_dir=str(data_dir),
      options=TWO,
      items=str(tmp_path / 'items.csv'),
    )
  )
  proc = subprocess.Popen(
    [sys.executable, '-c', script],
    start_new_session=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 240
  while not list(data_dir.rglob('*train.array_record*')):
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)  # The launcher and its workers.
  proc.wait()
  assert not list(data_dir.rglob('dataset_info.json'))
  assert list(data_dir.rglob('incomplete.*'))  # Killed half way.
  _, want = prepare(tmp_path, 'in_process', kw, chunksize=32)
  _, got = prepare(tmp_path, 'beam', kw, ONE, chunksize=32)
  assert got == want
  assert not list(data_dir.rglob('incomplete.*'))  # Cleared.


def test_bad_beam_options_are_one_config_error(tmp_path):
  kw = write_files(tmp_path, 'random', 'csv')
  with pytest.raises(ConfigError) as e:
    prepare(tmp_path, 'beam', kw, ('--direct_num_wrokers=2',))
  assert str(e.value) == (
    'dataset.beam_options has direct_num_wrokers, expected flags of '
    "Beam's PipelineOptions (e.g. --runner, --direct_num_workers)"
  )
  with pytest.raises(ConfigError) as e:
    prepare(tmp_path, 'beam', kw, '--direct_num_workers=2')
  assert str(e.value).startswith(
    "dataset.beam_options is '--direct_num_workers=2', expected a tuple"
  )
