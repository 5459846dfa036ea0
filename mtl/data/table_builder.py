"""TFDS builder of a user's table, described only by its schema (schema.py).

Files: CSV or TSV (optionally gzipped: pandas reads
'.gz' by its suffix) or Parquet, with a header line (or `column_names` for a
headerless file), read in chunks of `chunksize` rows (pyarrow record batches
for Parquet; table_files.py), side tables joined by key: no file but a side
table is ever whole in memory. Three streaming passes:

1. plan (table_plan.py): the split of every row (table_splits.py: 'files',
   'random', 'time', 'user_last'), the behaviour-history index, sessions
   and count logs, from only the columns these need.
2. fit (table_fit.py), on the training rows only: vocabularies, dense and
   label moments, count features' priors and moments.
3. encode (table_encode.py), split by split, into records of exactly
   `chunksize` rows (cb.fixed_blocks): 'dense', 'sparse', 'labels', 'mask'
   and 'row'. The encoding (vocabularies, moments, history index sizes) is
   the builder's metadata. The records go straight to array_record shards
   of SHARD_RECORDS records (a tfds.core.ShardBasedBuilder): no shuffle
   buffer, so memory stays one shard (~80 MB at the scale table's 80-byte
   rows) whatever the split's size, and TensorFlow is not needed (TFDS's
   GeneratorBasedBuilder holds a split's records until it ends, and spills
   past 1 GiB through tf.io; with keys in order, it then sorts the whole
   spill in memory: 6.5 GB at 50M rows). A record is serialised by numpy
   (packed_examples.py), not one protobuf value at a time; reading, encoding
   and writing overlap in threads (prefetch.py), in order.

This module is the frame: the config whose digest names the cache
(TableConfig, spec_of), the record's features, the files of each split
(their rows read by table_plan.split_rows), and the passes in order; with
`beam_options`, passes 2 and 3 run on Apache Beam (beam_prepare.py).

A bad value is one DataError line naming the file, its 1-based data row
(the header not counted), the column, what was found and what was expected.
"""

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import pathlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from mtl.data import cache, feature_kinds, schema_parse
from mtl.data import csv_builder as cb
from mtl.data import schema as sc
from mtl.data.packed_examples import packed_examples
from mtl.data.prefetch import prefetched
from mtl.data.schema_checks import check_columns
from mtl.data.side_tables import Joined
from mtl.data.table_encode import encoded_chunks
from mtl.data.table_files import Source
from mtl.data.table_fit import fit
from mtl.data.table_plan import Plan, split_rows
from mtl.data.table_splits import SPLITS
from mtl.errors import DataError

# Records (of `chunksize` rows) per array_record shard: 16 x 65,536 rows.
SHARD_RECORDS = 16
# Threads encoding chunks at once (table_encode.encoded_chunks): the
# cores this process may use, at most 4.
ENCODE_WORKERS = max(1, min(4, len(os.sched_getaffinity(0))))


class TableConfig(tfds.core.BuilderConfig):
  """Everything that decides the prepared data; its digest names the cache."""

  def __init__(self, *, spec: dict):
    # A file known by its sha256 is that file wherever it lies.
    files = {
      k: {x: v for x, v in f.items() if 'sha256' not in f or x != 'path'}
      for k, f in spec['files'].items()
    }
    text = json.dumps({**spec, 'files': files}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    super().__init__(
      name=f'{spec["name"]}-{digest}',
      description=f'{spec["name"]}, prepared by its schema',
    )
    self.spec = spec


def spec_of(
  *,
  name: str,
  sources: dict[str, Source | None],
  sha256: dict[str, str],
  split: dict,
  features: dict,
  tasks: dict,
  task_order: tuple[str, ...],
  joins: dict | None = None,
) -> dict:
  """The JSON-able description of a table for TableConfig; each file is
  identified by its sha256 (`sha256[key]`, the registered sum), else by its
  absolute path, size and modification time, so an edited file is prepared
  again."""
  files = {}
  for key, source in sources.items():
    if source is None:
      continue
    path = pathlib.Path(source.path)
    files[key] = {**dataclasses.asdict(source), 'path': str(path.resolve())}
    if key in sha256:
      files[key]['sha256'] = sha256[key].lower()
    else:
      stat = path.stat()
      files[key].update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
  return {
    'name': name,
    'files': files,
    'split': split,
    'features': features,
    'tasks': tasks,
    'task_order': list(task_order),
    **({'joins': joins} if joins else {}),
  }


def numeric_columns(schema) -> frozenset:
  """The columns that passes 2 and 3 may read as Arrow numbers (table_files'
  `numeric`): those of dense and categorical features without `extract`
  (a categorical's integers are counted and looked up by number, to the
  ids of their text: encoding.Lookup), labels, `where` and `divide_by`
  columns, less any column something else reads."""
  numbers, other = set(), set()
  for f in schema.features:
    plain = isinstance(f, sc.Dense | sc.Categorical) and not f.extract
    (numbers if plain else other).update(f.reads(schema))
  for t in schema.tasks:
    numbers.add(t.label)
    numbers.update(c for c in (t.divide_by, t.where and t.where.column) if c)
  return frozenset(numbers - other - set(schema.derived()))


class Metadata(tfds.core.MetadataDict):
  """TFDS's MetadataDict, saved by one json.dumps: the same text as its
  json.dump, which encodes in Python value by value (json's C encoder only
  runs in one shot), 2 s for the 560k vocabulary entries of a 2M-row
  table."""

  def save_metadata(self, data_dir):
    text = json.dumps(self)
    with (tfds.core.Path(data_dir) / 'metadata.json').open('w') as f:
      f.write(text)


class Table(cache.ShardBuilder):
  """A table prepared by its schema (see the module docstring)."""

  name = 'table'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Schema-described tables, streamed.'}
  BUILDER_CONFIGS = []

  @tfds.core.utils.classproperty
  @classmethod
  def _checksums_path(cls):
    return None  # The user's own files: nothing is downloaded.

  def __init__(
    self,
    *,
    chunksize: int = cb.DEFAULT_CHUNKSIZE,
    beam_options: tuple[str, ...] | None = None,
    **kwargs,
  ):
    spec = kwargs['config'].spec
    # Pipeline options: passes 2 and 3 run on Apache Beam (beam_prepare.py).
    self.beam_options = beam_options
    self.schema = schema_parse.parse(
      spec['features'], spec['tasks'], spec['task_order']
    )
    self.chunksize = chunksize
    self.numeric = numeric_columns(self.schema)
    super().__init__(**kwargs)

  def widths(self) -> tuple[int, int, int]:
    """(F dense, S sparse, T tasks) columns of a record."""
    dense, sparse = feature_kinds.inputs(self.schema)
    return len(dense), len(sparse), len(self.schema.tasks)

  def _info(self) -> tfds.core.DatasetInfo:
    # TFDS cannot read back a [n, 0] tensor: an empty block stores one
    # column of zeros, which the loader drops (table.py).
    dense, sparse, tasks = (max(w, 1) for w in self.widths())

    def column(dtype, width=None):
      shape = (None,) if width is None else (None, width)
      return tfds.features.Tensor(shape=shape, dtype=dtype)

    return tfds.core.DatasetInfo(
      builder=self,
      description='A table prepared by its feature schema.',
      features=tfds.features.FeaturesDict(
        {
          'dense': column(np.float32, dense),
          'sparse': column(np.int32, sparse),
          'labels': column(np.float32, tasks),
          'mask': column(np.float32, tasks),
          'row': column(np.int64),
        }
      ),
      metadata=Metadata(),
      disable_shuffling=True,
    )

  def _sources(self) -> list[tuple[Source | Joined, int | None]]:
    spec = self.builder_config.spec
    files = spec['files']

    def source(key):
      f = files[key]
      return Source(
        f['path'], f['fmt'], f['delimiter'], tuple(f['column_names']),
        f.get('encoding', 'utf-8'),
      )  # fmt: skip

    joins = [
      (source(f'join:{name}'), j['on'], j['key'])
      for name, j in spec.get('joins', {}).items()
    ]
    wrap = (lambda s: Joined(s, joins)) if joins else (lambda s: s)
    if spec['split']['rule'] == 'files':
      return [
        (wrap(source(k)), code) for code, k in enumerate(SPLITS) if k in files
      ]
    return [(wrap(source('table')), None)]

  def _download_and_prepare(self, dl_manager, download_config=None):
    with packed_examples():  # Records serialised by numpy, not per value.
      if self.beam_options is None:
        super()._download_and_prepare(dl_manager, download_config)
      else:
        from mtl.data import beam_prepare  # Needs the [beam] extra.

        beam_prepare.prepare(self, self.beam_options)

  def plan(self) -> Plan:
    """Pass 1, after the files' columns are checked against the schema;
    a split left without rows is a DataError."""
    sources = self._sources()
    for source, _ in sources:
      check_columns(self.schema, source.columns(), source.path)
    split = self.builder_config.spec['split']
    plan = Plan(sources, split, self.schema, self.chunksize)
    for code, name in enumerate(SPLITS):
      if not (plan.codes == code).any():
        raise DataError(
          f'{self.builder_config.spec["name"]}: the {split["rule"]!r} split '
          f'leaves no {name} rows, expected some'
        )
    return plan

  def _shard_iterators_per_split(self, dl_manager):
    del dl_manager
    plan = self.plan()
    encoding = fit(self.schema, plan, prefetched(self._rows(plan, 0)))
    self.info.metadata.update(encoding)
    self.info.metadata['block_rows'] = self.chunksize
    return {
      name: self._shards(plan, code, encoding)
      for code, name in enumerate(SPLITS)
    }

  def _shards(self, plan, code, encoding) -> list:
    """The split's shards: generators of SHARD_RECORDS records of
    `chunksize` rows each (keys 0, 1, ...; the last record and shard may be
    shorter), all drawing on one pass over the split's rows. TFDS writes
    them one after the other, and holds one shard's records while it does
    (writer.ShardWriter counts them after writing): memory is bounded by
    the shard, whatever the split's size."""
    records = -(-encoding['rows'][SPLITS[code]] // self.chunksize)
    blocks = None

    def shard(count):
      nonlocal blocks
      if blocks is None:
        rows = prefetched(self._rows(plan, code))
        chunks = encoded_chunks(
          self.schema, plan, encoding, rows, ENCODE_WORKERS
        )
        chunks = prefetched(chunks)
        blocks = enumerate(cb.fixed_blocks(chunks, self.chunksize))
      return itertools.islice(blocks, count)

    return [
      functools.partial(shard, min(SHARD_RECORDS, records - first))
      for first in range(0, records, SHARD_RECORDS)
    ]

  def _rows(self, plan: Plan, code: int) -> Iterator:
    return split_rows(
      self.schema, plan, code, self.chunksize, self.numeric, 0, plan.num_rows
    )
