"""A table prepared on Apache Beam: table_builder.py's passes 2 and 3 run
across the workers of a Beam runner (several processes of the
DirectRunner here; Dataflow, Flink or Spark on a cluster), and write the
very dataset the in-process builder writes, bit for bit.

Pass 1, the plan (table_plan.py: each row's split, the history, session
and count indexes), runs in the launching process, as in-process: it
reads only the columns it needs (one byte a row for a random split, about
20 for a split by time or user and for histories) and is sent to every
worker with the pipeline. Then two pipelines:

1. fit: the files' rows are cut into slices of SLICE_CHUNKS chunks
   (`chunksize` rows, cut where a whole read cuts them:
   table_files.Source.chunks). Each worker fits its slices' training rows
   (table_fit.Fit) and a combiner merges the fits: vocabularies are
   counted (text_counts.TextCounts: integer sums, exact in any order);
   dense and label moments keep one (count, mean, m2) part per chunk and
   fold them in row order at the end (csv_builder.Moments), the float
   operations of one process in its order. Only the merged counts and the
   parts come back, never a split's rows.
2. write: each array_record shard of each split (SHARD_RECORDS records of
   `chunksize` rows) is one element: a worker reads the rows of its shard
   (Parquet by row groups; CSV skipped to its first row by the parser),
   encodes them with the fitted encoding (table_encode.encoded_chunks)
   and writes the shard with TFDS's writer and the same serialiser
   (packed_examples.py). A record depends on its rows and the encoding
   alone, so the shards are the in-process builder's, byte for byte,
   whatever the number of workers.

The launcher then writes dataset_info.json and the metadata as TFDS does.
A DataError in a worker (a bad row) comes back as a value with its place
in the files, and the launcher raises the first one: the very line the
in-process builder raises, with nothing renamed into place (TFDS writes
into an incomplete directory and renames it only when all is written).

Limits: the plan is the launcher's memory (above), sent to each worker; a
worker holds one slice or one shard of rows (~80 MB at the scale table's
80-byte rows) and the vocabularies (about 2 x 50 bytes per distinct id
counted, 10 GB for 1e8 ids: use `hash_buckets` past a few 1e7).
"""

import logging
import pickle
import typing
from collections.abc import Sequence

import numpy as np
from etils import epath
from tensorflow_datasets.core import splits as splits_lib

from mtl.data import table_builder as tb
from mtl.data.beam_stages import (
  FitSlice,
  MergeFits,
  SplitReader,
  WriteShard,
  beam,
  pipeline_options,
)
from mtl.data.table_fit import Fit
from mtl.data.table_splits import SPLITS
from mtl.errors import DataError

# Chunks of `chunksize` rows per fit slice: 16 x 65,536 rows by default.
SLICE_CHUNKS = 16


def _tagged(results, tag):
  return results | f'Only{tag}' >> beam.Filter(lambda r: r[0] == tag)


def _save(path: epath.Path):
  def save(value):
    path.write_bytes(pickle.dumps(value))

  return save


def _first_error(errors: list) -> None:
  """Raises the DataError that comes first in the files, if any."""
  if errors:
    raise DataError(min(errors)[1])


def _run(options, build) -> None:
  """Runs the pipeline `build` makes; Beam's chatter (its workers' notes
  relayed as warnings) stays off."""
  logger = logging.getLogger('apache_beam')
  level = logger.level
  logger.setLevel(max(level, logging.ERROR))
  try:
    with beam.Pipeline(options=options) as p:
      build(p)
  finally:
    logger.setLevel(level)


def slices(plan, chunksize: int) -> list[tuple[int, int]]:
  """Global row ranges [lo, hi) of SLICE_CHUNKS chunks of one file each
  (the last of a file shorter) that hold training rows."""
  out, step = [], SLICE_CHUNKS * chunksize
  for k in range(len(plan.sources)):
    base, end = int(plan.bases[k]), int(plan.bases[k + 1])
    for lo in range(base, end, step):
      hi = min(lo + step, end)
      if (plan.codes[lo:hi] == 0).any():
        out.append((lo, hi))
  return out


def shards(builder: tb.Table, plan, rows: dict) -> list[tuple]:
  """Every shard's job (WriteShard) of every split, and its template."""
  jobs, templates = [], {}
  cs = builder.chunksize
  for code, name in enumerate(SPLITS):
    kept = np.flatnonzero(plan.codes == code)
    records = -(-rows[name] // cs)
    firsts = list(range(0, records, tb.SHARD_RECORDS))
    template = builder._get_filename_template(split_name=name)  # noqa: SLF001
    templates[name] = (template, [])
    for index, first in enumerate(firsts):
      count = min(tb.SHARD_RECORDS, records - first)
      lo = int(kept[first * cs])
      hi = int(kept[min((first + count) * cs, len(kept)) - 1]) + 1
      path = template.sharded_filepath(
        shard_index=index, num_shards=len(firsts)
      )
      templates[name][1].append((path, count))
      jobs.append((code, index, first, count, lo, hi, str(path)))
  return jobs, templates


def prepare(builder: tb.Table, options: Sequence[str]) -> None:
  """Prepares `builder`'s table on Beam (module docstring), into the
  directory TFDS's download_and_prepare has open (its incomplete one)."""
  options = pipeline_options(options)
  plan = builder.plan()
  rows = SplitReader(builder, plan)
  scratch = epath.Path(builder.data_path) / '.beam'
  scratch.mkdir(parents=True, exist_ok=True)

  def fit_pipeline(p):
    results = (
      p
      | 'Slices' >> beam.Create(slices(plan, builder.chunksize))
      | 'Spread' >> beam.Reshuffle()
      | 'Fit' >> beam.ParDo(FitSlice(rows)).with_output_types(typing.Any)
    )
    _ = (
      _tagged(results, 'fit')
      | 'Fits' >> beam.Map(lambda r: r[1])
      | 'Merge' >> beam.CombineGlobally(MergeFits())
      | 'SaveFit' >> beam.Map(_save(scratch / 'fit.pickle'))
    )
    _ = (
      _tagged(results, 'error')
      | 'Errors' >> beam.Map(lambda r: r[1])
      | 'ErrorList' >> beam.combiners.ToList()
      | 'SaveErrors' >> beam.Map(_save(scratch / 'fit_errors.pickle'))
    )

  _run(options, fit_pipeline)
  _first_error(pickle.loads((scratch / 'fit_errors.pickle').read_bytes()))
  fit = pickle.loads((scratch / 'fit.pickle').read_bytes())
  if fit is None:  # No slice had training rows (plan() rejects that).
    fit = Fit(builder.schema, plan)
  encoding = fit.finish(plan)
  builder.info.metadata.update(encoding)
  builder.info.metadata['block_rows'] = builder.chunksize
  jobs, templates = shards(builder, plan, encoding['rows'])
  features = builder.info.features

  def write_pipeline(p):
    results = (
      p
      | 'Shards' >> beam.Create(jobs)
      | 'Spread' >> beam.Reshuffle()
      | 'Write'
      >> beam.ParDo(
        WriteShard(rows, encoding, features, builder._example_writer())  # noqa: SLF001
      ).with_output_types(typing.Any)
    )
    _ = (
      results
      | 'Results' >> beam.combiners.ToList()
      | 'SaveResults' >> beam.Map(_save(scratch / 'written.pickle'))
    )

  _run(options, write_pipeline)
  results = pickle.loads((scratch / 'written.pickle').read_bytes())
  _first_error([r[1] for r in results if r[0] == 'error'])
  written = {(c, i): n for tag, (c, i, n) in results if tag == 'shard'}
  split_infos = []
  for code, name in enumerate(SPLITS):
    template, paths = templates[name]
    lengths = [written.get((code, i)) for i in range(len(paths))]
    if lengths != [n for _, n in paths]:
      raise RuntimeError(
        f'{name}: Beam wrote records {lengths} to its shards, expected '
        f'{[n for _, n in paths]}'
      )
    split_infos.append(
      splits_lib.SplitInfo(
        name=name,
        shard_lengths=lengths,
        num_bytes=sum(epath.Path(p).stat().length for p, _ in paths),
        filename_template=template,
      )
    )
  builder.info.set_splits(splits_lib.SplitDict(split_infos))
  scratch.rmtree()
