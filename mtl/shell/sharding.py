"""Which embedding tables a run shards by rows, and what they cost (shell).

config.parallel.sharding (read by build.sharding_request):

  rows       names of embedding tables (params embed/<name>: 'table' for the
             one shared table, else the features' tables) split by rows
             over every device of a data-parallel run
             (mtl/core/sharded_tables.py);
  min_bytes  every table whose replicated copy on one device (its rows and
             its optimizer's state) is at least this many bytes is split
             too (0, the default: no size rule).

Every other table is replicated, as in any data-parallel run, so the
default changes nothing. A split table is updated by
optimizer.sparse.method, whether or not optimizer.sparse names it (on its
touched rows, or 'adam': dense Adam on each device's block): no device
ever holds the whole table or its state. Sharding needs a
data-parallel run on the 'shard_map' backend, and a single member.

`plan` decides the layout and prints one console line per split table;
`check_memory` stops a run, before any work, whose tables and optimizer
state do not fit the memory of its devices.
"""

import dataclasses
import math
import os

import jax
import numpy as np

from mtl.core import optim, precision, sparse
from mtl.core import sharded_embedding as sharded_lib
from mtl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Table:
  """One embedding table's size: rows, width and bytes of the table and of
  its optimizer state, whole (replicated: on every device)."""

  rows: int
  dim: int
  table_bytes: int
  state_bytes: int

  @property
  def bytes(self) -> int:
    return self.table_bytes + self.state_bytes


@dataclasses.dataclass(frozen=True)
class Layout:
  """The run's tables, which are split by rows, and over how many devices."""

  tables: dict  # {name: Table}
  sharded: tuple  # Names split by rows, sorted.
  num_devices: int

  def per_device(self, name: str) -> int:
    """A table's bytes (rows and state) on each device."""
    t = self.tables[name]
    if name not in self.sharded:
      return t.bytes
    r = sharded_lib.rows_per_device(t.rows, self.num_devices)
    return math.ceil(t.bytes * r / t.rows)

  def record(self) -> dict:
    """What the workdir records of the layout (config_record)."""
    return {
      'num_devices': self.num_devices,
      'owner': 'id mod num_devices',
      'tables': {
        name: {
          'rows': t.rows,
          'dim': t.dim,
          'sharding': 'rows' if name in self.sharded else 'replicated',
          'bytes_per_device': self.per_device(name),
        }
        for name, t in sorted(self.tables.items())
      },
    }

  def lines(self) -> list[str]:
    """One console line per split table."""
    out = []
    for name in self.sharded:
      t = self.tables[name]
      r = sharded_lib.rows_per_device(t.rows, self.num_devices)
      out.append(
        f'table {name}: {t.rows:,} rows x {t.dim} split by rows over '
        f'{self.num_devices} devices (row i on device i mod '
        f'{self.num_devices}): {r:,} rows, {gb(self.per_device(name))} '
        f'with its optimizer state on each device '
        f'({gb(t.bytes)} replicated)'
      )
    return out


def gb(n: float) -> str:
  """Bytes for a person: '9.60 GB', '1.25 MB', '12.3 kB'."""
  for unit, size in (('GB', 1e9), ('MB', 1e6), ('kB', 1e3)):
    if n >= size:
      return f'{n / size:.2f} {unit}'
  return f'{int(n)} B'


@dataclasses.dataclass(frozen=True)
class Request:
  """What a config asks of the layout (read by build.sharding_request)."""

  rows: tuple = ()  # parallel.sharding.rows
  min_bytes: int = 0  # parallel.sharding.min_bytes
  sparse: dict = dataclasses.field(default_factory=dict)  # optimizer.sparse
  optimizer: str = 'adam'  # optimizer.name
  embedding_dtype: str = 'float32'  # embedding.dtype

  @property
  def requested(self) -> bool:
    return bool(self.rows) or self.min_bytes > 0


def check_request(
  request: Request, *, backend: str, num_devices: int, population: bool
) -> None:
  """The checks that need no data: backend, devices, a single member."""
  if not request.requested:
    return
  what = 'parallel.sharding (embedding tables split by rows)'
  if population:
    raise ConfigError(
      f'{what} is set with a population, expected a single run: the '
      'members of a population are vmapped on one device'
    )
  if backend != 'shard_map':
    raise ConfigError(
      f'{what} needs parallel.backend=shard_map, found {backend!r}'
    )
  if num_devices == 1 and jax.process_count() == 1:
    raise ConfigError(
      f'{what} is set with parallel.num_devices=1, expected a data-parallel '
      'run: parallel.num_devices=0 (every device) or N > 1'
    )


def _state_bytes(init, rows: int, dim: int) -> int:
  shape = jax.ShapeDtypeStruct((rows, dim), np.float32)
  return sum(
    math.prod(x.shape) * np.dtype(x.dtype).itemsize
    for x in jax.tree.leaves(jax.eval_shape(init, shape))
  )


def _tables(request: Request, table_shapes: dict, sparse_names) -> dict:
  """{name: Table} of the model's tables: a table in `sparse_names` with
  the sparse optimizer's state, any other with the main optimizer's."""
  s = {**optim.SPARSE_DEFAULTS, **request.sparse}
  dtype = request.embedding_dtype
  itemsize = np.dtype(precision.EMBEDDING_DTYPES[dtype]).itemsize
  sparse_init = sparse.SPARSE_OPTIMIZERS[s['method']](1.0).init
  dense_init = optim.OPTIMIZERS[request.optimizer](1.0).init
  out = {}
  for name, (rows, dim) in table_shapes.items():
    init = sparse_init if name in sparse_names else dense_init
    out[name] = Table(
      rows, dim, rows * dim * itemsize, _state_bytes(init, rows, dim)
    )
  return out


def plan(request: Request, table_shapes: dict, num_devices: int) -> Layout:
  """The run's layout; ConfigError on a table name the model does not
  have. A table's bytes count its optimizer's state: the sparse method's
  for the sparse tables (optimizer.sparse, and every split one), the main
  optimizer's for the others."""
  for name in request.rows:
    if name not in table_shapes:
      raise ConfigError(
        f'parallel.sharding.rows has {name!r}, expected names of the '
        "model's embedding tables: "
        f'{", ".join(sorted(table_shapes)) or "none"}'
      )
  names = set(request.rows)
  if request.min_bytes:  # By the bytes each would have split (sparse).
    split = _tables(request, table_shapes, set(table_shapes))
    names |= {n for n, t in split.items() if t.bytes >= request.min_bytes}
  chosen = optim.sparse_tables(request.sparse, table_shapes)
  tables = _tables(request, table_shapes, set(chosen) | names)
  return Layout(tables, tuple(sorted(names)), num_devices)


def available_bytes(devices) -> tuple[int, str]:
  """(bytes, what): the memory the run's devices of this process have. A
  GPU or TPU reports its own (memory_stats' bytes_limit, the smallest); CPU
  devices share the host's available memory (/proc/meminfo)."""
  local = [d for d in devices if d.process_index == jax.process_index()]
  stats = [d.memory_stats() or {} for d in local]
  limits = [s.get('bytes_limit') for s in stats]
  if local and all(limits):
    return min(limits) * len(local), f'{len(local)} x {gb(min(limits))}'
  try:
    with open('/proc/meminfo') as f:
      info = dict(line.split(':', 1) for line in f)
    return int(info['MemAvailable'].split()[0]) * 1024, 'available on the host'
  except (OSError, KeyError, ValueError):
    pages = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    return pages, 'available on the host'


def check_memory(layout: Layout, devices) -> None:
  """ConfigError, before any work, when the embedding tables and their
  optimizer state need more memory on this process's devices than they
  have; names the bytes needed and available and the largest replicated
  table."""
  local = sum(1 for d in devices if d.process_index == jax.process_index())
  need = local * sum(layout.per_device(n) for n in layout.tables)
  have, what = available_bytes(devices)
  if need <= have:
    return
  replicated = [n for n in layout.tables if n not in layout.sharded]
  hint = ''
  if replicated:
    big = max(replicated, key=lambda n: layout.tables[n].bytes)
    hint = (
      f'; split the largest replicated table by rows: '
      f'--config.parallel.sharding.rows="(\'{big}\',)"'
    )
  raise ConfigError(
    f'the embedding tables and their optimizer state need {gb(need)} on '
    f"this process's {local} device(s), {gb(have)} {what}{hint}"
  )
