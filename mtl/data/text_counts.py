"""How often each text value occurs, counted chunk by chunk in Arrow.

A vocabulary (encoding.fit_vocabulary: the values seen at least
`min_count` times, sorted) of a million ids over tens of millions of rows
is counted without a Python string or dict entry per value: each chunk's
values are counted by `pyarrow.compute.value_counts`, and the per-chunk
counts are merged (dictionary-encoded, summed by index) whenever they
outgrow the merged counts, so memory stays about twice the distinct
values. The vocabulary is sorted by UTF-8 bytes, which orders strings as
Python's `sorted` does (by code point).
"""

import numpy as np


class TextCounts:
  """Counts of text values (`add` chunk by chunk; `vocabulary` at the end)."""

  def __init__(self, merge_rows: int = 1 << 20):
    self.merge_rows = merge_rows  # Per-chunk counts held before a merge.
    self.merged = None  # (values pa.Array, counts int64 [n]), each once.
    self.pending = []  # Per-chunk (values, counts).
    self.pending_rows = 0

  def add(self, values) -> None:
    """Counts `values` (an Arrow string or integer array, or strings; none
    missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(values, pa.Array | pa.ChunkedArray):
      values = pa.array(np.asarray(values, dtype=object), pa.large_string())
    if not len(values):
      return
    # Integers (a Parquet id column read as numbers) are counted as
    # numbers, then named by their text: one text per number.
    if not pa.types.is_integer(values.type):
      values = values.cast(pa.large_string())
    counted = pc.value_counts(values)
    counts = counted.field('counts').to_numpy().astype(np.int64)
    texts = counted.field('values').cast(pa.large_string())
    self.pending.append((texts, counts))
    self.pending_rows += len(counts)
    merged = len(self.merged[1]) if self.merged else 0
    if self.pending_rows > max(self.merge_rows, merged):
      self._merge()

  def _merge(self) -> None:
    """The pending counts summed into the merged ones: the values
    dictionary-encoded, the counts summed by index."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = ([self.merged] if self.merged else []) + self.pending
    self.pending, self.pending_rows = [], 0
    if not parts:
      return
    values = pa.chunked_array([v for v, _ in parts], pa.large_string())
    coded = pc.dictionary_encode(values).combine_chunks()
    # float64 sums of int counts are exact below 2**53.
    counts = np.bincount(
      coded.indices.to_numpy(),
      weights=np.concatenate([c for _, c in parts]).astype(np.float64),
      minlength=len(coded.dictionary),
    )
    self.merged = (coded.dictionary, counts.astype(np.int64))

  def vocabulary(self, min_count: int) -> list[str]:
    """The values counted at least `min_count` times, sorted (as
    encoding.fit_vocabulary sorts them)."""
    import pyarrow.compute as pc

    self._merge()
    if self.merged is None:
      return []
    values, counts = self.merged
    kept = values.filter(counts >= min_count)
    return kept.take(pc.sort_indices(kept)).to_pylist()
