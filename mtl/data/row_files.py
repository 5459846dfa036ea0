"""A split's row file: fixed-width rows, one `os.pread` a row (what
input_mode 'stream' reads, mtl/data/streaming.py).

Why: the TFDS array_record files of a prepared `table` hold
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
"""

import os
import pathlib

import numpy as np

from mtl.errors import DataError


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
