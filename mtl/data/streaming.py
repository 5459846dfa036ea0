"""Streaming a prepared training split with grain: data beyond memory.

`input_mode='stream'`. The in-memory modes hold the whole
training split in every process; streaming holds one epoch's permutation
(4 bytes a row) and a few batches.

Why a row file: the TFDS array_record files of a prepared `table` hold
blocks of `block_rows` rows (65,536 by default) as tf.train.Example protos,
so reading one row means decoding its whole block. The training order is a
global permutation of the rows (pipeline.py): a batch draws from every
block. So the split is rewritten once, streamed block by block, into a flat
file of fixed-width rows (`stream_rows/train.rows` next to the prepared
files): row i is `words` little-endian 4-byte values at byte i * words * 4,
dense f32 [F] | sparse i32 [S] | labels f32 [T] | mask f32 [T]. A batch of
B rows is B `os.pread`s of one row each (POSIX_FADV_RANDOM: no read-ahead)
joined into one buffer that numpy views: no protobuf, and the process holds
the batch, never the file (the kernel's page cache keeps what fits).

Measured (50M rows, 4.0 GB, experiments/scale_benchmark.py --parts=epoch):
1.2M random rows/s for the reads alone on one thread. Two designs were
dropped: 16-row array_record records read through grain's
ArrayRecordDataSource, whose readers buffer 32 KiB per random read (about
6,000 rows/s); and a memory map of the file, where one gather of 1,024
random rows mapped 1.5 GB of page cache into the process's RSS (the
kernel maps the whole large folio of each row it faults in).

The order: epoch e reads exactly the rows of host mode, the first
N // batch_size full batches of `pipeline.epoch_permutation(data_key, e,
N)`, so the two modes train on identical batches (bit-identical runs).
grain feeds them: a `MapDataset` over the epoch's batch indices, whose
element b reads batch b's rows, and
`to_iter_dataset(ReadOptions(num_threads, prefetch_buffer_size))` reads
the next batches on worker threads while the current one trains. Each
process reads only its own rows of every global batch (epochs.process_rows)
from the shared file, so the global order is the same for any process
count. The iterator's state (grain's {'next_index': b}) is the batch
position within the epoch; the trainer stores it with the epoch in the
checkpoint's meta and a resumed run continues from it.

Evaluation streams as well: validation and test are row files too, read
in chunks of about EVAL_CHUNK_ROWS rows per device (`eval_chunks`), each
device the contiguous part of the padded split the in-memory evaluation
gives it; the engine carries the running sum of the counts from chunk to
chunk (train_step.make_scanned_eval), so the sums, and the metrics, have
the bits of the in-memory evaluation.

What a streamed Dataset carries besides its sample splits is typed:
`StreamFiles` (each split's row file, its rows, the row layout), in
`dataset.stats['stream']`; `stream_files(dataset)` reads it, `train_rows`
and `row_file` answer from it.
"""

import dataclasses
import inspect
import os
import pathlib

import numpy as np

from mtl.errors import ConfigError, DataError

ROWS_DIR = 'stream_rows'
ROWS_FILE = 'train.rows'
SPLITS = ('train', 'validation', 'test')
# Evaluation reads whole batches of each device's rows, about this many
# rows at a time (at least one batch): 131,072 scale rows are 10 MB, held a
# few times over (read, decoded, put on the device).
EVAL_CHUNK_ROWS = 131_072
TRANSPOSED = ('labels', 'mask')  # [tasks, rows] in the batch layout.
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
  """Appends rows (int32 [n, words]) to the flat row file `path`; the file
  appears at `path` only when closed (written to a .tmp, then renamed)."""

  def __init__(self, path: pathlib.Path):
    self.path = pathlib.Path(path)
    self.tmp = self.path.with_name(self.path.name + '.tmp')
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._file = open(self.tmp, 'wb')  # noqa: SIM115 (closed in close)

  def write(self, words: np.ndarray) -> None:
    self._file.write(np.ascontiguousarray(words, '<i4').tobytes())

  def close(self) -> None:
    self._file.flush()
    os.fsync(self._file.fileno())
    self._file.close()
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
    self.path, self.layout = pathlib.Path(path), layout
    size = self.path.stat().st_size
    want = num_rows * layout.words * 4
    if size != want:
      raise DataError(
        f'{path}: holds {size:,} bytes, expected {want:,} ({num_rows:,} '
        f'rows of the prepared split x {layout.words} words x 4 bytes); '
        'delete it to write it again'
      )
    self.num_rows = num_rows

  def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The batch of rows `rows` (int indices into the split), in order.

    Raises:
      DataError: the file became shorter than a row asked for.
    """
    size = self.layout.words * 4
    fd = os.open(self.path, os.O_RDONLY)
    try:
      os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # No read-ahead.
      data = b''.join(
        [os.pread(fd, size, r * size) for r in np.asarray(rows).tolist()]
      )
    finally:
      os.close(fd)
    if len(data) != len(rows) * size:
      raise DataError(
        f'{self.path}: a row of the batch read short ({len(data):,} of '
        f'{len(rows) * size:,} bytes); the file changed since it was opened'
      )
    words = np.frombuffer(data, '<i4').reshape(len(rows), self.layout.words)
    return self.layout.decode(words)

  def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows [start, stop) in one sequential read; rows from num_rows on are
    padding (zeros, mask 0), as pipeline.pad_split pads a split.

    Raises:
      DataError: the file became shorter than the rows asked for.
    """
    size = self.layout.words * 4
    end = min(stop, self.num_rows)
    data = b''
    if end > start:
      with open(self.path, 'rb') as f:
        data = os.pread(f.fileno(), (end - start) * size, start * size)
      if len(data) != (end - start) * size:
        raise DataError(
          f'{self.path}: rows {start:,} to {end:,} read short '
          f'({len(data):,} of {(end - start) * size:,} bytes); the file '
          'changed since it was opened'
        )
    words = np.zeros((stop - start, self.layout.words), '<i4')
    words[: max(end - start, 0)] = np.frombuffer(data, '<i4').reshape(
      -1, self.layout.words
    )
    return self.layout.decode(words)


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


def eval_chunks(
  rows: RowFile,
  batch_size: int,
  *,
  devices: int = 1,
  local=(0,),
  chunk_batches: int | None = None,
):
  """This process's rows of an evaluation split, a chunk at a time.

  The split, padded to a multiple of `batch_size`, is cut as the in-memory
  evaluation cuts it: device d of `devices` evaluates the d-th contiguous
  part, batch_size // devices rows a step. A chunk is the next
  `chunk_batches` steps of every device (default: EVAL_CHUNK_ROWS rows of
  each, at least one step); this process's chunk holds its
  `local` devices' rows, one device after the other (the layout put_batch
  splits). Each is one sequential read per device. Yields batch layouts.
  """
  padded = -(-rows.num_rows // batch_size) * batch_size
  per_device, step = padded // devices, batch_size // devices
  chunk_batches = chunk_batches or max(1, EVAL_CHUNK_ROWS // step)
  steps = per_device // step
  for first in range(0, steps, chunk_batches):
    last = min(steps, first + chunk_batches)
    parts = [
      rows.read(d * per_device + first * step, d * per_device + last * step)
      for d in local
    ]
    yield {
      k: np.concatenate([p[k] for p in parts], 1 if k in TRANSPOSED else 0)
      for k in parts[0]
    }


@dataclasses.dataclass(frozen=True)
class StreamFiles:
  """Where a streamed dataset's splits lie on disk, and their rows."""

  row_files: dict  # split -> the path of its row file
  rows: dict  # split -> its number of rows
  layout: Layout

  def row_file(self, split: str = 'train') -> RowFile:
    """A split's row file, opened."""
    return RowFile(self.row_files[split], self.layout, self.rows[split])


def stream_files(dataset) -> StreamFiles | None:
  """The row files of a dataset loaded by `load_streaming` (else None)."""
  return dataset.stats.get('stream')


def _table_builder(kwargs: dict):
  """The prepared TFDS builder of the `table` dataset's keywords, as
  load_table makes it (prepared if needed), without reading any split."""
  from mtl.data import prepared
  from mtl.data import table as tl

  params = inspect.signature(tl.load_table).parameters
  described = tl.describe(
    **({k: p.default for k, p in params.items()} | kwargs)
  )
  builder = described.make_builder()
  if not prepared.is_prepared(builder):
    described.prepare(builder)
  return builder, described.schema


def load_streaming(dataset_kwargs: dict, *, write: bool = True):
  """The Dataset of the metadata; `row_file(dataset, split)` opens a
  split's rows on disk.

  Every split is a row file (`stream_rows/<split>.rows`): training reads
  it in the epoch's order, evaluation in chunks (`eval_chunks`). The
  Dataset's splits hold only their first rows (a sample for shapes and the
  leakage guard); its `StreamFiles` (`stream_files(dataset)`) say the
  full counts.

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
  counts = {s: prepared.num_rows(builder, s) for s in SPLITS}
  paths = {}
  for split in SPLITS:
    name = ROWS_FILE if split == 'train' else f'{split}.rows'
    paths[split] = pathlib.Path(builder.data_path) / ROWS_DIR / name
    if not paths[split].exists():
      if not write:
        raise DataError(
          f'{paths[split]}: missing, expected process 0 to write it'
        )
      write_rows(builder, split, paths[split], layout)
  # The metadata and splits as load_table gives them, cut short: train's
  # first `sample` rows are process 0's share among total // sample.
  total = counts['train']
  sample = min(total, builder.info.metadata['block_rows'])
  dataset = tl._dataset(
    builder,
    schema,
    kwargs.get('name') or 'table',
    0,
    total // sample,
    eval_rows=sample,
  )
  dataset.stats['share'] = {'train_rows': [0, dataset.num_rows('train')]}
  dataset.stats['rows'] = counts
  for split in ('validation', 'test'):  # Of the sample only: not kept.
    dataset.stats['label_mean'].pop(split, None)
  dataset.stats['stream'] = StreamFiles(
    row_files={s: str(p) for s, p in paths.items()},
    rows=counts,
    layout=layout,
  )
  return dataset


def train_rows(dataset) -> int:
  """Rows of the whole training split, streamed or in memory."""
  stream = stream_files(dataset)
  return (stream and stream.rows['train']) or dataset.num_rows('train')


def row_file(dataset, split: str = 'train') -> RowFile:
  """A split's row file, of a dataset loaded by `load_streaming`."""
  return stream_files(dataset).row_file(split)
