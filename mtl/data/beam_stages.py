"""The stages of a table prepared on Apache Beam (beam_prepare.py says
the design): Beam imported quietly, its pipeline flags checked, what a
worker reads (`SplitReader`), fits (`FitSlice`, merged by `MergeFits`) and
writes (`WriteShard`). A DataError in a worker is an output value with its
place in the files, so the launcher raises the first, as one process
would.
"""

import logging
from collections.abc import Sequence

from etils import epath
from tensorflow_datasets.core import writer as writer_lib

from mtl.data import csv_builder as cb
from mtl.data import table_builder as tb
from mtl.data.packed_examples import PackedExampleSerializer
from mtl.data.table_encode import encoded_chunks
from mtl.data.table_fit import Fit
from mtl.data.table_plan import split_rows
from mtl.errors import ConfigError, DataError


def _import_beam():
  """apache_beam, imported without its warnings about cloud clients that
  are not installed (GCP's apitools, BigQuery)."""
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.ERROR)
  try:
    import apache_beam
    from apache_beam.options import pipeline_options
  finally:
    root.setLevel(level)
  return apache_beam, pipeline_options.PipelineOptions


beam, PipelineOptions = _import_beam()


def pipeline_options(options: Sequence[str]) -> PipelineOptions:
  """Beam's options of command-line flags ('--runner=...', ...); a flag
  Beam does not know is a ConfigError."""
  options = list(options)
  for flag in options:
    if not isinstance(flag, str) or not flag.startswith('--'):
      raise ConfigError(
        f'dataset.beam_options has {flag!r}, expected Beam pipeline flags '
        "like '--direct_num_workers=2'"
      )
  if not any(o.startswith('--default_sdk_harness_log_level') for o in options):
    options.append('--default_sdk_harness_log_level=ERROR')  # Quiet.
  parsed = PipelineOptions(options)
  unknown = parsed.view_as(PipelineOptions).get_all_options(
    retain_unknown_options=True
  )
  known = PipelineOptions([]).get_all_options()
  extra = sorted(set(unknown) - set(known))
  if extra:
    raise ConfigError(
      f'dataset.beam_options has {", ".join(extra)}, expected flags of '
      "Beam's PipelineOptions (e.g. --runner, --direct_num_workers)"
    )
  return parsed


class SplitReader:
  """What a worker needs to read a split's rows (table_plan.split_rows)."""

  def __init__(self, builder: tb.Table, plan):
    self.schema, self.plan = builder.schema, plan
    self.chunksize, self.numeric = builder.chunksize, builder.numeric

  def rows(self, code: int, lo: int, hi: int):
    return split_rows(
      self.schema, self.plan, code, self.chunksize, self.numeric, lo, hi
    )


class FitSlice(beam.DoFn):
  """A slice of global rows [lo, hi) -> ('fit', Fit) of its training
  rows, or ('error', (lo, message)) for a bad row."""

  def __init__(self, rows: SplitReader):
    self.at = rows

  def process(self, element):
    lo, hi = element
    at = self.at
    try:
      fit = Fit(at.schema, at.plan).update(at.plan, at.rows(0, lo, hi))
    except DataError as e:
      yield 'error', ((0, lo), str(e))
      return
    yield 'fit', fit


class MergeFits(beam.CombineFn):
  """Fits of slices merged into one (table_fit.Fit.merge)."""

  def create_accumulator(self):
    return None

  def add_input(self, acc, fit):
    return fit if acc is None else acc.merge(fit)

  def merge_accumulators(self, accs):
    out = None
    for acc in accs:
      if acc is not None:
        out = acc if out is None else out.merge(acc)
    return out

  def extract_output(self, acc):
    return acc


class WriteShard(beam.DoFn):
  """A shard (code, index, first record, records, lo, hi, path) -> its
  rows encoded and written: ('shard', (code, index, records)), or
  ('error', ((1, code, lo), message))."""

  def __init__(
    self, rows: SplitReader, encoding: dict, features, example_writer
  ):
    self.at, self.encoding, self.features = rows, encoding, features
    self.example_writer = example_writer

  def setup(self):
    serializer = PackedExampleSerializer(self.features.get_serialized_info())
    self.writer = writer_lib.ShardWriter(
      features=self.features,
      serializer=serializer,
      example_writer=self.example_writer,
    )

  def process(self, job):
    code, index, first, records, lo, hi, path = job
    at = self.at
    try:
      chunks = encoded_chunks(
        at.schema, at.plan, self.encoding, at.rows(code, lo, hi)
      )
      blocks = enumerate(cb.fixed_blocks(chunks, at.chunksize), first)
      written = self.writer.write(examples=blocks, path=epath.Path(path))
    except DataError as e:
      yield 'error', ((1, code, lo), str(e))
      return
    yield 'shard', (code, index, written)
