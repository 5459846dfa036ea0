"""How often each text value occurs, counted chunk by chunk in Arrow.

A vocabulary (encoding.fit_vocabulary: the values seen at least
`min_count` times, sorted) of a million ids over tens of millions of rows
is counted without a Python string or dict entry per value: each chunk's
values are counted by `pyarrow.compute.value_counts`, and the per-chunk
counts are merged (dictionary-encoded, summed by index) whenever they
outgrow the merged counts, so memory stays about twice the distinct
values. Integers (a Parquet id column read as numbers) and texts that are
an integer's own text (encoding.INTEGER_TEXT) are counted as int64, whose
merges hash numbers, not strings (10x less time at 50M rows); they become
their text once, at the end, where one merge sums any text counted both
ways. The vocabulary is sorted by UTF-8 bytes, which orders strings as
Python's `sorted` does (by code point).
"""

import numpy as np


class _Counts:
  """Counts of one Arrow type (int64 or large_string), merged in place."""

  def __init__(self, merge_rows: int):
    self.merge_rows = merge_rows  # Per-chunk counts held before a merge.
    self.merged = None  # (values pa.Array, counts int64 [n]), each once.
    self.pending = []  # Per-chunk (values, counts).
    self.pending_rows = 0

  def add(self, values, counts: np.ndarray) -> None:
    self.pending.append((values, counts))
    self.pending_rows += len(counts)
    merged = len(self.merged[1]) if self.merged else 0
    if self.pending_rows > max(self.merge_rows, merged):
      self.merge()

  def merge(self) -> None:
    """The pending counts summed into the merged ones: the values
    dictionary-encoded, the counts summed by index."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = ([self.merged] if self.merged else []) + self.pending
    self.pending, self.pending_rows = [], 0
    if not parts:
      return
    values = pa.chunked_array([v for v, _ in parts], parts[0][0].type)
    coded = pc.dictionary_encode(values).combine_chunks()
    # float64 sums of int counts are exact below 2**53.
    counts = np.bincount(
      coded.indices.to_numpy(),
      weights=np.concatenate([c for _, c in parts]).astype(np.float64),
      minlength=len(coded.dictionary),
    )
    self.merged = (coded.dictionary, counts.astype(np.int64))


class TextCounts:
  """Counts of text values (`add` chunk by chunk; `vocabulary` at the end)."""

  def __init__(self, merge_rows: int = 1 << 20):
    self.merge_rows = merge_rows
    self.texts = _Counts(merge_rows)
    self.numbers = _Counts(merge_rows)

  @property
  def merged(self):
    """The merged text counts (values, counts), or None."""
    return self.texts.merged

  def add(self, values) -> None:
    """Counts `values` (an Arrow string or integer array, or strings; none
    missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mtl.data.encoding import INTEGER_TEXT

    if not isinstance(values, pa.Array | pa.ChunkedArray):
      values = pa.array(np.asarray(values, dtype=object), pa.large_string())
    if not len(values):
      return
    if pa.types.is_integer(values.type):
      try:
        values = values.cast(pa.int64())
      except pa.ArrowInvalid:  # A uint64 above 2**63 - 1: its text.
        values = values.cast(pa.large_string())
    else:
      values = values.cast(pa.large_string())
    counted = pc.value_counts(values)
    found = counted.field('values')
    counts = counted.field('counts').to_numpy().astype(np.int64)
    if pa.types.is_int64(found.type):
      self.numbers.add(found, counts)
      return
    own = pc.match_substring_regex(found, INTEGER_TEXT)
    own = own.to_numpy(zero_copy_only=False)
    if own.any():
      mask = pa.array(own)
      self.numbers.add(pc.cast(found.filter(mask), pa.int64()), counts[own])
      found, counts = found.filter(pa.array(~own)), counts[~own]
    if len(counts):
      self.texts.add(found, counts)

  def merge(self, other: 'TextCounts') -> None:
    """Adds the counts of `other` (exact: integer sums)."""
    for mine, theirs in (
      (self.texts, other.texts),
      (self.numbers, other.numbers),
    ):
      theirs.merge()
      if theirs.merged is not None:
        mine.add(*theirs.merged)

  def vocabulary(self, min_count: int) -> list[str]:
    """The values counted at least `min_count` times, sorted (as
    encoding.fit_vocabulary sorts them)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    self.numbers.merge()
    if self.numbers.merged is not None:
      numbers, counts = self.numbers.merged
      self.numbers.merged = None
      self.texts.add(numbers.cast(pa.large_string()), counts)
    self.texts.merge()
    if self.texts.merged is None:
      return []
    values, counts = self.texts.merged
    kept = values.filter(counts >= min_count)
    return kept.take(pc.sort_indices(kept)).to_pylist()
