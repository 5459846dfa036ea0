"""A prepared-data cache that cannot be used, and raw files that cannot be
read as text (mtl/data/cache.py, csv_builder.py, prepared.py).

Oracles: a fresh preparation of the same raw files (a rebuilt cache must
give the same arrays), and byte positions computed here from the bytes the
test wrote.
"""

import gzip
import logging
import os
import shutil

import numpy as np
import pytest

from configs import ali_ccp
from mtl.data import DATASETS, census_income, csv_builder
from mtl.data import census_income_builder as cib
from mtl.errors import DataError

VARIANTS = ali_ccp.VARIANTS
FILES = ('path', 'validation_path', 'test_path')


def _raw(data_dir, folder, edit=None, split='path', variant='full'):
  """The Ali-CCP sample as the `variant` files in `folder` (the 'full'
  ones have no checksums, so they may be edited: `edit` the `split` one)."""
  folder.mkdir(parents=True, exist_ok=True)
  for key in FILES:
    data = (data_dir / 'ali-ccp-sample' / VARIANTS['sample'][key]).read_bytes()
    if edit is not None and key == split:
      data = edit(data)
    (folder / VARIANTS[variant][key]).write_bytes(data)
  return folder


def _load(raw, tfds, variant='full', **kwargs):
  config = ali_ccp.get_config().dataset.to_dict()
  config.update(variant=variant, manual_dir=str(raw), data_dir=str(tfds))
  return DATASETS['table'](**{**config, **kwargs})


@pytest.fixture(scope='module')
def reference(tmp_path_factory, data_dir):
  """A fresh preparation of the checksummed sample and its cache directory
  (a file known by its sha256 needs not be there to read the cache)."""
  root = tmp_path_factory.mktemp('reference')
  raw = _raw(data_dir, root / 'raw', variant='sample')
  ds = _load(raw, root / 'tfds', variant='sample')
  return ds, root / 'tfds'


def _copy(reference, tmp_path):
  tfds = tmp_path / 'tfds'
  shutil.copytree(reference[1], tfds)
  (version,) = (tfds / 'table').glob('ali_ccp-*/1.0.0')
  return tfds, version


def _truncate(version):
  record = next(version.glob('table-train.array_record*'))
  record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])


def _garbage(version):
  record = next(version.glob('table-validation.array_record*'))
  record.write_bytes(os.urandom(record.stat().st_size))


DAMAGES = {
  'truncated record file': _truncate,
  'garbage record file': _garbage,
  'no dataset_info.json': lambda v: (v / 'dataset_info.json').unlink(),
  'garbage dataset_info.json': lambda v: (v / 'dataset_info.json').write_bytes(
    b'\xff\xfe not json'
  ),
  'empty dataset_info.json': lambda v: (v / 'dataset_info.json').write_text(''),
}


def _same(a, b):
  for split in a.splits:
    for key in a.splits[split]:
      np.testing.assert_array_equal(a.splits[split][key], b.splits[split][key])


@pytest.mark.parametrize('damage', DAMAGES)
def test_damaged_cache_is_rebuilt_from_the_raw_files(
  reference, tmp_path, data_dir, caplog, damage
):
  tfds, version = _copy(reference, tmp_path)
  DAMAGES[damage](version)
  raw = _raw(data_dir, tmp_path / 'raw', variant='sample')
  with caplog.at_level(logging.WARNING):
    ds = _load(raw, tfds, 'sample')
  _same(ds, reference[0])
  warned = [r.getMessage() for r in caplog.records]
  warned = [m for m in warned if 'cannot be used' in m]
  assert len(warned) == 1 and str(version) in warned[0], warned
  assert 'preparing it again from the raw files' in warned[0]
  _same(_load(raw, tfds, 'sample'), reference[0])  # Now cached and whole.


@pytest.mark.parametrize('damage', DAMAGES)
def test_damaged_cache_without_raw_files_names_the_directory(
  reference, tmp_path, damage
):
  tfds, version = _copy(reference, tmp_path)
  DAMAGES[damage](version)
  before = sorted(p.name for p in version.iterdir())
  with pytest.raises(DataError) as err:
    _load(tmp_path / 'nowhere', tfds, 'sample')
  message = str(err.value)
  assert '\n' not in message
  assert message.startswith(
    f'ali_ccp: the prepared data in {version} cannot be used ('
  )
  train = tmp_path / 'nowhere' / VARIANTS['sample']['path']
  assert f'missing ({train}, ' in message
  assert message.endswith(
    f'delete {version} and prepare it again from the raw files'
  )
  assert sorted(p.name for p in version.iterdir()) == before  # Untouched.


def test_only_process_0_rebuilds(reference, tmp_path, data_dir):
  tfds, version = _copy(reference, tmp_path)
  _truncate(version)
  raw = _raw(data_dir, tmp_path / 'raw', variant='sample')
  with pytest.raises(DataError, match='only process 0 prepares data: delete'):
    _load(raw, tfds, 'sample', process_index=1, process_count=2)


def test_cache_of_since_fixed_raw_files_is_rebuilt(
  reference, tmp_path, data_dir, caplog
):
  """A cache whose data failed validation comes back once the raw files are
  fixed (before, the same error came back from the cache). The fixed file
  keeps its size and time, so the cache is the same one."""

  def one_class(data):
    lines = data.split(b'\n')
    lines[1:] = [b'0' + x[1:] if x else x for x in lines[1:]]  # click
    return b'\n'.join(lines)

  raw = _raw(data_dir, tmp_path / 'raw', one_class, split='test_path')
  stats = {p: p.stat() for p in raw.iterdir()}
  with pytest.raises(DataError, match="'click' labels are all 0"):
    _load(raw, tmp_path / 'tfds')
  _raw(data_dir, raw)  # Fixed, with the sizes and times of the broken files.
  for path, stat in stats.items():
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  with caplog.at_level(logging.WARNING):
    _same(_load(raw, tmp_path / 'tfds'), reference[0])
  warned = [r.getMessage() for r in caplog.records]
  assert len([m for m in warned if 'cannot be used' in m]) == 1, warned


def test_damaged_census_cache_without_raw_files(census_tfds_dir, tmp_path):
  tfds = tmp_path / 'tfds'
  shutil.copytree(census_tfds_dir / 'census_income', tfds / 'census_income')
  version = next((tfds / 'census_income').glob('*'))
  record = next(version.glob('census_income-test.array_record*'))
  record.write_bytes(record.read_bytes()[: record.stat().st_size // 3])
  with pytest.raises(DataError) as err:
    census_income.load_census_income(
      manual_dir=tmp_path / 'nowhere', data_dir=tfds
    )
  message = str(err.value)
  assert message.startswith(
    f'census_income: the prepared data in {version} cannot be used ('
  )
  assert f'delete {version} and prepare it again' in message


# --- raw files that are not CSV text ---------------------------------------


def _field_offset(data: bytes, row: int, column: int) -> int:
  lines = data.split(b'\n')
  start = sum(len(x) + 1 for x in lines[:row])
  return start + sum(len(f) + 1 for f in lines[row].split(b',')[:column])


def test_non_utf8_byte_names_file_row_column_and_offset(tmp_path, data_dir):
  sample = data_dir / 'ali-ccp-sample' / VARIANTS['sample']['path']
  data = sample.read_bytes()
  column = data.split(b'\n')[0].decode().split(',').index('D109_14')
  lines = data.split(b'\n')
  fields = lines[7].split(b',')
  fields[column] = b'\xe9' + fields[column]  # latin-1 e-acute
  lines[7] = b','.join(fields)
  raw = _raw(data_dir, tmp_path / 'raw', lambda d: b'\n'.join(lines))
  with pytest.raises(DataError) as err:
    _load(raw, tmp_path / 'tfds')
  assert str(err.value) == (
    f"{raw / 'ali_ccp_train.csv'}: row 7 column 'D109_14' (byte offset "
    f'{_field_offset(data, 7, column)}) has byte 0xe9, which is not UTF-8; '
    'expected UTF-8 text'
  )


def test_first_bad_utf8_across_read_blocks(tmp_path):
  """A character split by the 1 MiB read blocks is valid; the bad byte
  after it is found at its offset."""
  head = b'a,b\n' + b'x' * ((1 << 20) - 6) + b','
  data = head + 'é'.encode() + b'\n1,2\n3,\xff\n'
  assert len(head) == (1 << 20) - 1  # 'é' is split by the first block.
  path = tmp_path / 'f.csv'
  path.write_bytes(data)
  got = csv_builder.first_bad_utf8(path)
  assert got == (data.index(b'\xff'), 4, 1, 0xFF)
  path.write_bytes(data.replace(b'\xff', b'4'))
  assert csv_builder.first_bad_utf8(path) is None


def test_non_utf8_byte_in_a_gzipped_census_file(tmp_path, data_dir):
  source = data_dir / 'census-income-kdd' / 'census-income.test.gz'
  with gzip.open(source, 'rb') as f:
    lines = [next(f) for _ in range(5)]
  fields = lines[2].split(b', ')
  fields[4] = b'Bach\xffelors'
  lines[2] = b', '.join(fields)
  path = tmp_path / 'census-income.test.gz'
  with gzip.open(path, 'wb') as f:
    f.write(b''.join(lines))
  offset = sum(map(len, lines[:2])) + sum(len(x) + 2 for x in fields[:4]) + 4
  with pytest.raises(DataError) as err:
    cib.read_raw(path)
  assert str(err.value) == (
    f"{path}: row 3 column 'education' (byte offset {offset}) has byte "
    '0xff, which is not UTF-8; expected UTF-8 text'
  )


@pytest.mark.parametrize(
  'content,message',
  [
    (b'', 'is empty, expected a header'),
    (b'\n\n', 'is empty, expected a header'),
    (b'HEADER\n', 'has no data rows, expected some'),
    (b'HEADER\n\n\n', 'has no data rows, expected some'),
  ],
)
def test_empty_and_header_only_files(tmp_path, data_dir, content, message):
  raw = _raw(
    data_dir,
    tmp_path / 'raw',
    lambda d: content.replace(b'HEADER', d.split(b'\n')[0]),
    split='validation_path',
  )
  with pytest.raises(DataError) as err:
    _load(raw, tmp_path / 'tfds')
  assert str(err.value) == f'{raw / "ali_ccp_val.csv"}: {message}'


def test_empty_census_file(tmp_path):
  path = tmp_path / 'census-income.data.gz'
  with gzip.open(path, 'wb') as f:
    f.write(b'\n')
  with pytest.raises(DataError, match='is empty, expected CSV rows'):
    cib.read_raw(path)
