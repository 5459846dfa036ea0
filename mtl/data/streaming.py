"""Streaming a prepared training split with grain: data beyond memory.

Issue 14 item 6, `input_mode='stream'`. The in-memory modes hold the whole
training split in every process; streaming holds one epoch's permutation
(4 bytes a row) and a few batches.

Why a row file: the TFDS array_record files of a prepared `table` hold
blocks of `block_rows` rows (65,536 by default) as tf.train.Example protos,
so reading one row means decoding its whole block. The training order is a
global permutation of the rows (pipeline.py): a batch draws from every
block. So the split is rewritten once, streamed block by block, into an
array_record file of small records (`stream_rows/train.array_record` next
to the prepared files, 'group_size:1' for random access): each record is
ROWS_PER_RECORD consecutive rows of raw little-endian 4-byte values, a row
dense f32 [F] | sparse i32 [S] | labels f32 [T] | mask f32 [T]. A batch of
B rows is then B record reads in array_record's C++ reader and numpy
views, no protobuf.

The order: epoch e reads exactly the rows of host mode, the first
N // batch_size full batches of `pipeline.epoch_permutation(data_key, e,
N)`, so the two modes train on identical batches (bit-identical runs).
grain feeds them: a `MapDataset` over the epoch's batch indices, whose
element b reads batch b's rows (`ArrayRecordDataSource.__getitems__`), and
`to_iter_dataset(ReadOptions(num_threads, prefetch_buffer_size))` reads
the next batches on worker threads while the current one trains. Each
process reads only its own rows of every global batch (epochs.process_rows)
from the shared file, so the global order is the same for any process
count. The iterator's state (grain's {'next_index': b}) is the batch
position within the epoch; the trainer stores it with the epoch in the
checkpoint's meta and a resumed run continues from it.
"""

import inspect
import pathlib

import numpy as np

from mtl.errors import ConfigError, DataError

ROWS_DIR = 'stream_rows'
WRITER_OPTIONS = 'group_size:1,uncompressed'
# Rows per record: array_record keeps an index entry (~30 bytes) per record
# in memory, 1.5 GB for 50M one-row records; 16 rows cut it to ~100 MB at
# the cost of reading 16 rows (~1.2 kB) for each row of a batch.
ROWS_PER_RECORD = 16
STREAMABLE = ('table',)  # Datasets prepared as TFDS array_record tables.


def check_streamable(dataset_name: str, model_name: str | None = None):
  """Raises a one-line ConfigError unless `dataset_name` can stream."""
  if dataset_name not in STREAMABLE:
    raise ConfigError(
      f"input_mode is 'stream' with dataset {dataset_name!r}, which has no "
      'prepared array_record files to stream; expected one of '
      f"{', '.join(STREAMABLE)} (or input_mode 'host'/'device')"
    )
  del model_name


class Layout:
  """The record layout of a row: widths of each part, in 4-byte words."""

  def __init__(self, dense: int, sparse: int, tasks: int):
    self.dense, self.sparse, self.tasks = dense, sparse, tasks
    self.words = dense + sparse + 2 * tasks

  def encode(self, block: dict) -> np.ndarray:
    """int32 [n, words] of a block in the prepared record layout."""
    n = len(block['row'])
    parts = [
      block['dense'][:, : self.dense].astype('<f4').view('<i4'),
      block['sparse'][:, : self.sparse].astype('<i4'),
      block['labels'].astype('<f4').view('<i4'),
      block['mask'].astype('<f4').view('<i4'),
    ]
    return np.ascontiguousarray(np.concatenate(parts, 1).reshape(n, -1))

  def decode(self, words: np.ndarray) -> dict[str, np.ndarray]:
    """The batch layout (dataset.py) of int32 [n, words] rows."""
    d, s, t = self.dense, self.sparse, self.tasks
    return {
      'dense': np.ascontiguousarray(words[:, :d]).view(np.float32),
      'sparse': np.ascontiguousarray(words[:, d : d + s]).astype(np.int32),
      'labels': np.ascontiguousarray(words[:, d + s : d + s + t].T).view(
        np.float32
      ),
      'mask': np.ascontiguousarray(words[:, d + s + t :].T).view(np.float32),
    }


class RowWriter:
  """Writes rows (int32 [n, words]) as records of ROWS_PER_RECORD rows,
  the last one padded with zero rows; to `path` when closed, atomically."""

  def __init__(self, path: pathlib.Path):
    from array_record.python import array_record_module

    self.path = pathlib.Path(path)
    self.tmp = self.path.with_name(self.path.name + '.tmp')
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._writer = array_record_module.ArrayRecordWriter(
      str(self.tmp), WRITER_OPTIONS
    )
    self._carry = None

  def write(self, words: np.ndarray) -> None:
    if self._carry is not None:
      words = np.concatenate([self._carry, words])
    full = len(words) - len(words) % ROWS_PER_RECORD
    data = np.ascontiguousarray(words[:full], '<i4').tobytes()
    size = ROWS_PER_RECORD * words.shape[1] * 4
    for start in range(0, len(data), size):
      self._writer.write(data[start : start + size])
    self._carry = words[full:]

  def close(self) -> None:
    carry = self._carry
    if carry is not None and len(carry):
      pad = np.zeros((ROWS_PER_RECORD - len(carry), carry.shape[1]), '<i4')
      self._writer.write(np.concatenate([carry.astype('<i4'), pad]).tobytes())
    self._writer.close()
    self.tmp.replace(self.path)


def write_rows(builder, split: str, path: pathlib.Path, layout: Layout):
  """Writes `split`'s rows to the row file `path` (atomically).

  Streams the prepared records one block at a time: memory is one block.

  Raises:
    DataError: a prepared block that did not read back whole.
  """
  from mtl.data import prepared

  source = builder.as_data_source(split=split)
  writer = RowWriter(path)
  for k in range(len(source)):
    block = source[k]
    prepared.check_record(builder, split, k, block)
    writer.write(layout.encode(block))
  writer.close()


class RowFile:
  """Random access to the rows of one split's row file."""

  def __init__(self, path: pathlib.Path, layout: Layout, num_rows: int):
    import grain

    self.path, self.layout = pathlib.Path(path), layout
    self.source = grain.sources.ArrayRecordDataSource([str(path)])
    records = -(-num_rows // ROWS_PER_RECORD)
    if len(self.source) != records:
      raise DataError(
        f'{path}: holds {len(self.source)} records, expected {records} '
        f'({num_rows} rows of the prepared split); delete it to write it '
        'again'
      )
    self.num_rows = num_rows

  def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The batch of rows `rows` (int indices into the split), in order."""
    rows = np.asarray(rows)
    records = self.source.__getitems__((rows // ROWS_PER_RECORD).tolist())
    words = np.frombuffer(b''.join(records), '<i4').reshape(
      len(rows), ROWS_PER_RECORD, self.layout.words
    )
    return self.layout.decode(
      words[np.arange(len(rows)), rows % ROWS_PER_RECORD]
    )


class _ReadBatch:
  """grain map: batch index -> this process's rows of that global batch."""

  def __init__(self, rows: RowFile, perm, batch_size: int, share):
    self.rows, self.perm, self.batch, self.share = rows, perm, batch_size, share

  def __call__(self, b: int) -> dict[str, np.ndarray]:
    global_rows = self.perm[b * self.batch : (b + 1) * self.batch]
    return self.rows.take(self.share(global_rows))


def epoch_iterator(
  rows: RowFile,
  perm: np.ndarray,
  batch_size: int,
  *,
  share=lambda r: r,
  num_threads: int = 2,
  prefetch: int = 8,
  state: dict | None = None,
):
  """A grain iterator over an epoch's full batches in the order `perm`.

  Args:
    rows: the split's row file.
    perm: int [N], the epoch's permutation (pipeline.epoch_permutation).
    batch_size: the global batch; N // batch_size batches.
    share: global batch rows -> this process's rows (epochs.process_rows).
    num_threads, prefetch: grain's reading threads and batches read ahead.
    state: an iterator state (`it.get_state()`) to resume from.
  """
  import grain

  steps = len(perm) // batch_size
  ds = grain.MapDataset.range(steps).map(
    _ReadBatch(rows, np.asarray(perm), batch_size, share)
  )
  it = iter(
    ds.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    )
  )
  if state is not None:
    it.set_state(state)
  return it


def _table_builder(kwargs: dict):
  """The prepared TFDS builder of the `table` dataset's keywords, as
  load_table makes it (prepared if needed), without reading any split."""
  import tensorflow_datasets as tfds

  from mtl.data import prepared
  from mtl.data import schema as sc
  from mtl.data import table as tl
  from mtl.data import table_builder as tb

  params = inspect.signature(tl.load_table).parameters
  kw = {k: p.default for k, p in params.items()} | kwargs
  features, tasks = tl._to_dict(kw['features']), tl._to_dict(kw['tasks'])
  schema = sc.parse(features, tasks, tuple(kw['task_order']))
  split = tl._split(
    rule=kw['split'],
    **{
      k: kw[k]
      for k in (
        'validation_fraction',
        'test_fraction',
        'split_seed',
        'time_column',
        'user_column',
        'last_n',
      )
    },
  )
  source = lambda key: tl._source(  # noqa: E731
    key, kw[key], kw['file_format'], kw['delimiter'], kw['column_names']
  )
  if kw['split'] == 'files':
    keys = ('path', 'validation_path', 'test_path')
    sources = dict(zip(tb.SPLITS, map(source, keys), strict=True))
  else:
    sources = {'table': source('path')}
  spec = tb.spec_of(
    name=kw['name'],
    sources=sources,
    split=split,
    features=features,
    tasks=tasks,
    task_order=tuple(kw['task_order']),
  )
  builder = tb.Table(
    config=tb.TableConfig(spec=spec),
    data_dir=kw['data_dir'],
    file_format='array_record',
    chunksize=kw['chunksize'],
  )
  if not prepared.is_prepared(builder):
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
  return builder, schema


def load_streaming(dataset_kwargs: dict, *, write: bool = True):
  """The Dataset of the metadata and evaluation splits; `row_file` opens
  its training rows.

  The Dataset's 'train' split holds only the first rows of the training
  split (a sample for shapes and the leakage guard); `stats['stream']`
  says the full count. The validation and test splits are in memory.

  Args:
    dataset_kwargs: the `table` dataset's keywords (config.dataset).
    write: write the row file if it is missing (process 0 of a run; the
      others wait at the dataset barrier and only read).
  """
  from mtl.data import prepared
  from mtl.data import table as tl

  kwargs = dict(dataset_kwargs)
  kwargs.pop('process_index', None), kwargs.pop('process_count', None)
  builder, schema = _table_builder(kwargs)
  dense, sparse, tasks = builder.widths()
  layout = Layout(dense, sparse, tasks)
  total = prepared.num_rows(builder, 'train')
  path = pathlib.Path(builder.data_path) / ROWS_DIR / 'train.array_record'
  if not path.exists():
    if not write:
      raise DataError(f'{path}: missing, expected process 0 to write it')
    write_rows(builder, 'train', path, layout)
  # The metadata and splits as load_table gives them, train cut short: its
  # first `sample` rows are process 0's share among total // sample.
  sample = min(total, builder.info.metadata['block_rows'])
  dataset = tl._dataset(
    builder, schema, kwargs.get('name') or 'table', 0, total // sample
  )
  dataset.stats['share'] = {'train_rows': [0, dataset.num_rows('train')]}
  dataset.stats['stream'] = {
    'train_rows': total,
    'row_file': str(path),
    'layout': [layout.dense, layout.sparse, layout.tasks],
  }
  return dataset


def train_rows(dataset) -> int:
  """Rows of the whole training split, streamed or in memory."""
  return dataset.stats.get('stream', {}).get('train_rows') or (
    dataset.num_rows('train')
  )


def row_file(dataset) -> RowFile:
  """The training row file of a dataset loaded by `load_streaming`."""
  stream = dataset.stats['stream']
  return RowFile(
    stream['row_file'], Layout(*stream['layout']), stream['train_rows']
  )
