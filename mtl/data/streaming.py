"""Streaming a prepared training split with grain: data beyond memory.

`input_mode='stream'`. The in-memory modes hold the whole
training split in every process; streaming holds one epoch's permutation
(4 bytes a row) and a few batches.

The split is rewritten once into a flat row file
(mtl/data/row_files.py: `stream_rows/<split>.rows` next to the prepared
files), read a row at a time by `os.pread`.

The order: epoch e reads exactly the rows of host mode, the first
N // batch_size full batches of `pipeline.epoch_permutation(data_key, e,
N)`, so the two modes train on identical batches (bit-identical runs).
grain feeds them: a `MapDataset` over the epoch's batch indices, whose
element b reads batch b's rows, and
`to_iter_dataset(ReadOptions(num_threads, prefetch_buffer_size))` reads
the next batches on worker threads while the current one trains. Each
process reads only its own rows of every global batch (inputs.process_rows)
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

What a streamed Dataset carries besides its sample splits is typed: a
`StreamedDataset` holds its `StreamFiles` (each split's row file, its rows,
the row layout) in its `files` field; `stream_files(dataset)` gives them
(None for a dataset in memory), `train_rows` and `row_file` answer from
them.
"""

import dataclasses
import inspect
import pathlib

import numpy as np

from mtl.data import cache
from mtl.data.dataset import Dataset
from mtl.data.row_files import Layout, RowFile, write_rows
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
    share: global batch rows -> this process's rows (inputs.process_rows).
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


@dataclasses.dataclass(frozen=True)
class StreamedDataset(Dataset):
  """A Dataset whose splits hold only their first rows (a sample for
  shapes and the leakage guard); `files`: the whole splits on disk."""

  files: StreamFiles | None = None


def stream_files(dataset) -> StreamFiles | None:
  """The row files of a dataset loaded by `load_streaming` (else None)."""
  return dataset.files if isinstance(dataset, StreamedDataset) else None


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
    builder = cache.prepare_once(
      described.make_builder, described.prepare, builder.data_path
    )
  return builder, described.schema


def load_streaming(dataset_kwargs: dict, *, write: bool = True):
  """The Dataset of the metadata; `row_file(dataset, split)` opens a
  split's rows on disk.

  Every split is a row file (`stream_rows/<split>.rows`): training reads
  it in the epoch's order, evaluation in chunks (`eval_chunks`). The
  Dataset's splits hold only their first rows (a sample for shapes and the
  leakage guard); its `files` (`StreamFiles`) say where the splits are
  and their full counts.

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
  sampled = tl.prepared_dataset(
    builder,
    schema,
    kwargs.get('name') or 'table',
    0,
    total // sample,
    eval_rows=sample,
  )
  files = StreamFiles(
    row_files={s: str(p) for s, p in paths.items()},
    rows=counts,
    layout=layout,
  )
  dataset = StreamedDataset(
    **{f.name: getattr(sampled, f.name) for f in dataclasses.fields(sampled)},
    files=files,
  )
  dataset.stats['share'] = {'train_rows': [0, dataset.num_rows('train')]}
  dataset.stats['rows'] = counts
  for split in ('validation', 'test'):  # Of the sample only: not kept.
    dataset.stats['label_mean'].pop(split, None)
  return dataset


def train_rows(dataset) -> int:
  """Rows of the whole training split, streamed or in memory."""
  stream = stream_files(dataset)
  return (stream and stream.rows['train']) or dataset.num_rows('train')


def row_file(dataset, split: str = 'train') -> RowFile:
  """A split's row file, of a dataset loaded by `load_streaming`."""
  return stream_files(dataset).row_file(split)
