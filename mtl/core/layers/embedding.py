"""Dense features concatenated with embeddings of the categorical ids.

Two layouts, told apart by the entries of `vocab_sizes` (one per column of
`sparse`):

- plain ints (census, synthetic, entire_space): ONE table shared by all
  columns, column s owning rows [offset_s, offset_s + vocab_sizes[s]);
- `Column`s (the schema-described table, mtl/data/table.py): an embedding
  table PER FEATURE, named by the feature (params embed/<table>), so
  tables can be sized (`dim`), initialised, optimised and sharded
  separately; a feature may use another's table (`table=`: a
  behaviour history embedded with the item ids' table). A categorical
  feature is one column. A sequence feature is `max_len` consecutive
  columns whose id 0 is padding; its embeddings [B, L, d] and mask
  (id != 0) [B, L] are pooled into one vector [B, d] by
  `SEQUENCE_ENCODERS[pooling]`, inside this stage, so every architecture
  takes sequence features unchanged.

`SEQUENCE_ENCODERS` is the extension point for sequence encoders: a
function (embeddings [B, L, d], mask [B, L] bool) -> [B, d] that must ignore
masked positions (whatever their embeddings). Attention (DIN), GRU or
Transformer encoders go there.

Sparse updates (mtl/core/sparse_train.py) see the layer through `lookups`:
each gather is one `Lookup`, named (the feature; 'table' for the shared
table), and its gathered rows [B, L, d] get the variable 'perturbations'/
<name> added when the caller passes one (flax's `perturb` recipe: the loss's
gradient with respect to that zero is the rows' gradient, so the table's
dense gradient is never made). Without it the layer is unchanged.

A table sharded by rows over devices (mtl/core/sharded_tables.py) is never
whole on one device: the caller gathers its rows itself and passes them as
the variable 'gathered'/<name> [B, L, d] of each of its lookups, which
stand in for the layer's own gather; a table all of whose lookups are
given so is not a param of the layer at all. `row_blocks` ((table, N)
pairs) makes such a table's param, when the layer is initialised, in the
split layout [N * R, d] (row i at block i mod N, row i // N) with the values
of the whole table's init, each row drawn where it lives (`_blocked`).

The tables are stored in `param_dtype` (config.embedding.dtype,
precision.EMBEDDING_DTYPES): 'bfloat16' initialises them as in float32 and
rounds each entry to the nearest bfloat16; the gathered rows are cast to
float32 (exact), so everything after the gather computes as before.
"""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl.core import precision
from mtl.core.layers import initializers, sequence

PAD_ID = 0
# Rows of each block a split table's init draws at a time (`_blocked`).
BLOCK_ROWS = 1 << 16


def mean_pool(embeddings: jax.Array, mask: jax.Array) -> jax.Array:
  """The mean of the unmasked embeddings; zeros for an empty sequence."""
  w = mask.astype(embeddings.dtype)[..., None]
  total = jnp.sum(jnp.where(w > 0, embeddings, 0.0), axis=-2)
  return total / jnp.maximum(jnp.sum(w, axis=-2), 1.0)


def sum_pool(embeddings: jax.Array, mask: jax.Array) -> jax.Array:
  """The sum of the unmasked embeddings."""
  keep = mask.astype(bool)[..., None]
  return jnp.sum(jnp.where(keep, embeddings, 0.0), axis=-2)


# Modules (mtl/core/layers/sequence.py: din, gru, lstm, transformer) also
# get the candidate: the categorical feature whose table the sequence uses.
SEQUENCE_ENCODERS = {'mean': mean_pool, 'sum': sum_pool, **sequence.ENCODERS}


class Column(int):
  """A sparse column's vocabulary size that also says how it is embedded.

  It is an int (its table's row count), so a Dataset's `vocab_sizes` keeps
  its meaning and checks; the attributes add the per-feature layout:

  Attributes:
    feature: the feature the column belongs to (a sequence's columns are
      consecutive and share it).
    table: the embedding table it looks up (default: the feature's own).
    pooling: None for a categorical feature (one column); a key of
      SEQUENCE_ENCODERS for a sequence.
    dim: the table's width; 0: the model's embed_dim.
  """

  def __new__(
    cls,
    size: int,
    *,
    feature: str,
    table: str | None = None,
    pooling: str | None = None,
    dim: int = 0,
  ):
    obj = super().__new__(cls, size)
    obj.feature = feature
    obj.table = table or feature
    obj.pooling = pooling
    obj.dim = dim
    return obj

  def __getnewargs_ex__(self):
    return (int(self),), {
      'feature': self.feature,
      'table': self.table,
      'pooling': self.pooling,
      'dim': self.dim,
    }

  def __repr__(self) -> str:
    return (
      f'Column({int(self)}, feature={self.feature!r}, table={self.table!r}, '
      f'pooling={self.pooling!r}, dim={self.dim})'
    )


def feature_groups(vocab_sizes, embed_dim: int) -> tuple[list, dict]:
  """([(feature, table, pooling, start, stop)], {table: (rows, dim)}) of a
  per-feature layout; ValueError on an inconsistent one."""
  groups, tables = [], {}
  for s, c in enumerate(vocab_sizes):
    if not isinstance(c, Column):
      raise ValueError(
        f'FeatureEmbedding: column {s} is a plain vocab size {c} among '
        'Columns, expected one layout'
      )
    if groups and groups[-1][0] == c.feature:
      groups[-1][4] = s + 1
    else:
      if any(g[0] == c.feature for g in groups):
        raise ValueError(f'feature {c.feature!r}: columns not consecutive')
      groups.append([c.feature, c.table, c.pooling, s, s + 1])
    shape = (int(c), c.dim or embed_dim)
    if tables.setdefault(c.table, shape) != shape:
      raise ValueError(
        f'table {c.table!r} is {tables[c.table]} and {shape} (rows, dim)'
      )
  for feature, _, pooling, start, stop in groups:
    if pooling is None and stop - start != 1:
      raise ValueError(
        f'feature {feature!r} has {stop - start} columns and no pooling'
      )
    if pooling is not None and pooling not in SEQUENCE_ENCODERS:
      raise ValueError(
        f'feature {feature!r}: pooling {pooling!r} is not one of '
        f'{sorted(SEQUENCE_ENCODERS)}'
      )
  return [tuple(g) for g in groups], tables


class Lookup(NamedTuple):
  """One gather of the layer: `sparse[:, start:stop] (+ offsets)` in `table`.

  name: its perturbation's name (the feature; 'table' in the shared layout).
  offsets: [stop - start] row offsets of the columns (shared layout), or None.
  pooling: None (one column) or a key of SEQUENCE_ENCODERS.
  """

  name: str
  table: str
  start: int
  stop: int
  offsets: tuple[int, ...] | None = None
  pooling: str | None = None

  def ids(self, sparse) -> jax.Array:
    """sparse [B, S] -> the table rows looked up, [B, stop - start]."""
    ids = sparse[:, self.start : self.stop]
    if self.offsets is None:
      return ids
    return ids + np.asarray(self.offsets, np.int32)


def lookups(vocab_sizes, embed_dim: int) -> tuple[list, dict]:
  """([Lookup], {table: (rows, dim)}): the gathers of the layer's layout."""
  vocab_sizes = tuple(vocab_sizes)
  if not vocab_sizes:
    return [], {}
  if any(isinstance(v, Column) for v in vocab_sizes):
    groups, tables = feature_groups(vocab_sizes, embed_dim)
    return [Lookup(f, t, a, b, None, p) for f, t, p, a, b in groups], tables
  offsets = np.cumsum((0,) + vocab_sizes[:-1], dtype=np.int32)
  lk = Lookup(
    'table', 'table', 0, len(vocab_sizes), tuple(int(o) for o in offsets)
  )
  return [lk], {'table': (sum(vocab_sizes), embed_dim)}


def column_init(key, shape, dtype=jnp.float32) -> jax.Array:
  """A per-feature table's init: flax's default, rows 0 and 1 zero.

  Row 0 is the padding id and row 1 the out-of-vocabulary id
  (mtl/data/encoding.py PAD_ID, OOV_ID). With a training vocabulary no
  training row holds id 1 (every training value is in it at min_count 1),
  so its row never gets a gradient: left random, every unseen id of the
  test split (63 % of KuaiRand's test rows show a video unseen in training)
  would be embedded as noise. Zero, an unseen id adds nothing: measured on
  the KuaiRand slice (seed 0..2), test like AUC 0.822 +- 0.043 -> 0.852 +-
  0.015. Padding is masked by every encoder, so row 0 is zero for clarity.
  """
  return initializers.embed_init(key, shape, dtype).at[:2].set(0.0)


def _block_shape(shape, n: int) -> tuple:
  return (n * -(-shape[0] // n),) + tuple(shape[1:])


def _blocked(num_rows: int, n: int, zero_first: bool):
  """The init of a table of `num_rows` rows split over n devices: at
  position p of [N * R, d] (block p // R, row p % R) the whole table's row
  i = (p % R) * N + p // R, drawn alone (initializers.embed_rows), so each
  device draws only its own rows; padding rows (i >= V) zero, and with
  `zero_first` rows 0 and 1 too (`column_init`)."""

  def rows(key, ids, d):  # [N, s] ids -> [N, s, d]
    x = initializers.embed_rows(key, ids.reshape(-1), (num_rows, d))
    keep = (ids < num_rows) & ((ids >= 2) if zero_first else True)
    return jnp.where(keep.reshape(-1, 1), x, 0.0).reshape(ids.shape + (d,))

  def init(key, shape, dtype=jnp.float32):
    del dtype  # float32; `_stored` rounds.
    r, d = shape[0] // n, shape[1]
    ids = (
      jnp.arange(r, dtype=jnp.uint32)[None, :] * n
      + jnp.arange(n, dtype=jnp.uint32)[:, None]
    )  # [N, R]: block k's rows k, k + N, ...
    # Drawn BLOCK_ROWS rows of every block at a time into the [N, R, d]
    # blocks (the last chunk overlaps the one before: the same values), so
    # the draw's temporaries are a chunk's, not the table's.
    s = min(r, BLOCK_ROWS)
    starts = jnp.minimum(jnp.arange(-(-r // s)) * s, r - s)

    def body(i, out):
      at = starts[i]
      chunk = jax.lax.dynamic_slice_in_dim(ids, at, s, axis=1)
      return jax.lax.dynamic_update_slice_in_dim(
        out, rows(key, chunk, d), at, axis=1
      )

    out = jnp.zeros((n, r, d), jnp.float32)
    out = jax.lax.fori_loop(0, starts.shape[0], body, out)
    return out.reshape(shape)

  return init


def _stored(init):
  """`init` for a table stored in `dtype`: float32's values, rounded to the
  nearest `dtype` (float32: `init` itself)."""

  def init_as(key, shape, dtype):
    if dtype == jnp.float32:
      return init(key, shape, dtype)
    return init(key, shape, jnp.float32).astype(dtype)

  return init_as


class FeatureEmbedding(nn.Module):
  """x = [dense, emb(feature_0), ...]: [B, F + sum of the features' widths].

  With plain-int `vocab_sizes`, all S columns share ONE table of
  sum(vocab_sizes) rows (param 'table'), feature s owning rows
  [offset_s, offset_s + vocab_sizes[s]), so the lookup is one gather and no
  two features share a row. With `Column`s, one table per feature (params
  named by table) and pooled sequences (module docstring). With S = 0 there
  is no table (and no params): the dense features pass through unchanged.

  Attributes:
    vocab_sizes: vocabulary size of each sparse column, in column order.
    embed_dim: width of each embedding (a Column's dim may override it).
    param_dtype: the tables' storage dtype, a key of
      precision.EMBEDDING_DTYPES; lookups are float32 whatever it is.
  """

  vocab_sizes: tuple[int, ...]
  embed_dim: int
  param_dtype: str = 'float32'
  row_blocks: tuple = ()  # ((table, N), ...): made split by rows.

  @nn.compact
  def __call__(self, dense: jax.Array, sparse: jax.Array) -> jax.Array:
    """dense [B, F] float32, sparse [B, S] int32 -> x [B, D]."""
    num_sparse = len(self.vocab_sizes)
    if sparse.ndim != 2 or sparse.shape[1] != num_sparse:
      raise ValueError(
        f'FeatureEmbedding: sparse is {list(sparse.shape)}, expected '
        f'[B, {num_sparse}] (one column per vocab size)'
      )
    dense = jnp.asarray(dense, jnp.float32)
    if num_sparse == 0:
      return dense
    layout, shapes = lookups(self.vocab_sizes, self.embed_dim)
    shared = {lk.table for lk in layout if lk.offsets is not None}
    given = lambda lk: self.has_variable('gathered', lk.name)  # noqa: E731
    outside = {lk.table for lk in layout if given(lk)} - {
      lk.table for lk in layout if not given(lk)
    }
    blocks = dict(self.row_blocks)
    tables = {
      name: self.param(
        name,
        _stored(
          _blocked(shape[0], blocks[name], name not in shared)
          if name in blocks
          else initializers.embed_init
          if name in shared
          else column_init
        ),
        _block_shape(shape, blocks[name]) if name in blocks else shape,
        precision.EMBEDDING_DTYPES[self.param_dtype],
      )
      for name, shape in shapes.items()
      if name not in outside
    }
    out, gathered, modules = [dense], {}, []
    for lk in layout:
      ids = lk.ids(sparse)
      if given(lk):  # A sharded table's rows, gathered by the caller.
        rows = self.get_variable('gathered', lk.name)
      else:
        rows = jnp.take(tables[lk.table], ids, axis=0)  # [B, L, d]
      if rows.dtype != jnp.float32:  # A bfloat16 table: exact.
        rows = rows.astype(jnp.float32)
      if self.has_variable('perturbations', lk.name):
        rows = rows + self.get_variable('perturbations', lk.name)
      if lk.offsets is not None:  # The shared table: columns side by side.
        out.append(rows.reshape(sparse.shape[0], -1))
      elif lk.pooling is None:
        out.append(rows[:, 0])
        gathered[lk.name] = rows[:, 0]
      elif isinstance(SEQUENCE_ENCODERS[lk.pooling], type):
        modules.append((len(out), lk, rows, ids != PAD_ID))
        out.append(None)  # Encoded below, once the candidate is gathered.
      else:
        out.append(SEQUENCE_ENCODERS[lk.pooling](rows, ids != PAD_ID))
    for at, lk, rows, mask in modules:
      # The candidate: the categorical feature that owns the sequence's table.
      encode = SEQUENCE_ENCODERS[lk.pooling](name=f'encode_{lk.name}')
      out[at] = encode(rows, mask, gathered.get(lk.table))
    return jnp.concatenate(out, axis=-1)
