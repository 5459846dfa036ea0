"""Checkpoints of runs whose embedding tables are split by rows (shell).

A run with sharded tables (mtl/shell/sharding.py) checkpoints each such
table, and each leaf of its sparse optimizer's state, in its own layout:
the blocks of its N devices side by side, [N * R, d], R = ceil(V / N)
(mtl/core/sharded_embedding.py). Orbax writes every array shard by shard,
each process its own, so nothing is gathered to one host. The checkpoint's
meta records the layout under META_KEY: {'num_devices': N, 'rows': {table:
V}}.

`Relayout` restores a checkpoint onto the layout of the run reading it:
another device count (8 -> 4 -> 1), split or whole tables. It gives the
checkpoint's tree as saved (the shapes to read, each split table read
split over the reading run's devices when they divide its rows, whole on
each otherwise) and then moves each row to where the reader wants it:
`unshard_rows` with the saved N, `shard_rows` with the new one. Rows are
only moved, never computed, so the restored tables and state are exactly
the saved ones.
"""

import jax
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from mtl.core import parallel, sharded_embedding, sharded_tables

META_KEY = 'sharding'


def meta_of(names, num_rows: dict, num_devices: int) -> dict:
  """The meta entry of a checkpoint of `names` split over N devices."""
  return {
    'num_devices': num_devices,
    'rows': {n: int(num_rows[n]) for n in sorted(names)},
  }


class Relayout:
  """Reads a checkpoint of any layout into the reader's (module docstring).

  names: the tables the reader splits (empty: whole tables).
  num_rows: {table: V} of every embedding table.
  mesh: the reader's mesh (None: one device, unplaced arrays).
  """

  def __init__(self, names, num_rows: dict, mesh=None):
    self.names = tuple(names)
    self.num_rows = dict(num_rows)
    self.mesh = mesh
    self.n = 1 if mesh is None else mesh.devices.size

  def _saved(self, meta: dict):
    s = (meta or {}).get(META_KEY) or {}
    return s.get('rows') or {}, int(s.get('num_devices') or 1)

  def _read_sharding(self, rows: int | None = None):
    """Where a leaf is read: one device (no mesh); split over the mesh when
    its `rows` divide; else whole on each device of the mesh."""
    if self.mesh is None:
      return SingleDeviceSharding(jax.local_devices()[0])
    split = rows is not None and rows % self.n == 0
    return NamedSharding(self.mesh, P(parallel.AXIS_NAME) if split else P())

  def reader_abstract(self, meta: dict, saved):
    """The saved tree's leaves (anything with shape and dtype) as this
    reader holds them: a split table's leaves [V, ...] whole, or its blocks
    over this reader's devices."""
    saved_rows, saved_n = self._saved(meta)
    moved = set(saved_rows) | set(self.names)

    def leaf(path, m):
      table = sharded_tables.table_of(path, moved)
      shape = tuple(m.shape)
      split = None
      if table is not None:
        v = self.num_rows[table]
        rows = v
        if table in self.names:
          rows = split = self.n * sharded_embedding.rows_per_device(v, self.n)
        shape = (rows,) + shape[1:]
      # A placement for every leaf: orbax would otherwise place it as it
      # was saved, on devices this process may not have.
      return jax.ShapeDtypeStruct(
        shape, m.dtype, sharding=self._read_sharding(split)
      )

    return jax.tree_util.tree_map_with_path(leaf, saved)

  def plan(self, meta: dict, abstract):
    """(the saved tree to read, leaves ShapeDtypeStruct; a function from
    the tree read to the reader's layout)."""
    saved_rows, saved_n = self._saved(meta)
    moved = set(saved_rows) | set(self.names)
    if not moved:
      return abstract, lambda tree: tree

    def disk(path, leaf):
      table = sharded_tables.table_of(path, moved)
      if table is None:
        return leaf
      v = self.num_rows[table]
      rows = v
      if table in saved_rows:
        rows = saved_n * sharded_embedding.rows_per_device(v, saved_n)
      return jax.ShapeDtypeStruct(
        (rows,) + tuple(leaf.shape[1:]),
        leaf.dtype,
        sharding=self._read_sharding(rows),
      )

    def convert(tree):
      def leaf_of(path, x, want):
        table = sharded_tables.table_of(path, moved)
        if table is None:
          return x
        v = self.num_rows[table]
        was, now = table in saved_rows, table in self.names
        if was and now and saved_n == self.n:
          return x

        def move(x):
          if was:
            x = sharded_embedding.unshard_rows(x, v, saved_n)
          if now:
            x = sharded_embedding.shard_rows(x, self.n)
          return x

        out = getattr(want, 'sharding', None)
        return jax.jit(move, out_shardings=out)(x)

      return jax.tree_util.tree_map_with_path(leaf_of, tree, abstract)

    return jax.tree_util.tree_map_with_path(disk, abstract), convert
