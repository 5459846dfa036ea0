"""tf.train.Example records of numeric tensors, serialised by numpy.

TFDS serialises a record by filling protobuf lists one number at a time
(`Int64List(value=array.flat)`): ~0.25 s for one 65,536-row record of the
scale table, as long as encoding it. `PackedExampleSerializer` writes the
same message with numpy: a float32 tensor's packed FloatList is its
little-endian bytes, an int32/int64 tensor's packed Int64List its
varints (`varints`). The features go in sorted order. Protobuf leaves the
order of a map's entries open and TFDS's serialiser (upb) picks one per
process, so its files were never byte-for-byte repeatable; these are, and
they parse to the same Example (tests/data/test_packed_examples.py).

A record with a feature of another kind (text, bool, float64, a nested
sequence, an optional one) goes to TFDS's serialiser unchanged.
`packed_examples()` puts the serialiser in place while a builder writes
its shards (table_builder.Table).
"""

import contextlib

import numpy as np
from tensorflow_datasets.core import example_serializer, split_builder, utils

_FLOAT_LIST, _INT64_LIST = 2, 3  # tf.train.Feature's fields.
_PACKED = {np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.int64)}


def _varint(n: int) -> bytes:
  """The protobuf varint of a length (n >= 0)."""
  out = bytearray()
  while True:
    low, n = n & 0x7F, n >> 7
    if not n:
      out.append(low)
      return bytes(out)
    out.append(low | 0x80)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field: its key, its length, its bytes."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def varints(values: np.ndarray) -> bytes:
  """The protobuf varints of int64 `values`, laid end to end (a negative
  value is its 64-bit two's complement: ten bytes)."""
  u = np.ascontiguousarray(values, dtype=np.int64).reshape(-1).view(np.uint64)
  if not len(u):
    return b''
  top = int(u.max())
  if top < 1 << 32:  # Half the memory traffic for the usual ids.
    u = u.astype(np.uint32)
  width = max(1, -(-top.bit_length() // 7))
  out = np.empty((len(u), width), np.uint8)
  keep = np.empty((len(u), width), bool)
  keep[:, 0] = True
  for k in range(width):
    low = (u >> u.dtype.type(7 * k)) & u.dtype.type(0x7F)
    out[:, k] = low
    if k + 1 < width:  # More bytes follow while value >= 2**(7 (k + 1)).
      keep[:, k + 1] = u >= u.dtype.type(1 << (7 * (k + 1)))
      out[:, k] |= keep[:, k + 1].view(np.uint8) << 7
  return out[keep].tobytes()


def feature_bytes(value: np.ndarray) -> bytes:
  """A serialised tf.train.Feature of a float32, int32 or int64 array
  (flattened), its list packed."""
  if value.dtype == np.float32:
    payload = value.reshape(-1).astype('<f4', copy=False).tobytes()
    number = _FLOAT_LIST
  else:
    payload = varints(value)
    number = _INT64_LIST
  inner = _field(1, payload) if payload else b''
  return _field(number, inner)


def example_bytes(features: dict[str, np.ndarray]) -> bytes:
  """A serialised tf.train.Example of `features` (name -> array), in
  sorted order of the names."""
  entries = b''.join(
    _field(1, _field(1, name.encode()) + _field(2, feature_bytes(v)))
    for name, v in sorted(features.items())
  )
  return _field(1, entries)


class PackedExampleSerializer(example_serializer.ExampleSerializer):
  """TFDS's ExampleSerializer, numeric tensors serialised by numpy."""

  def serialize_example(self, example):
    specs = self._flat_example_specs
    packable = all(
      np.dtype(info.np_dtype) in _PACKED
      and not info.sequence_rank
      and not info.optional
      for info in specs.values()
    )
    if not packable or set(example) != set(specs):
      return super().serialize_example(example)
    arrays = {}
    for name, info in specs.items():
      arrays[name] = np.asanyarray(example[name], dtype=info.np_dtype)
      utils.assert_shape_match(arrays[name].shape, info.shape)
    return example_bytes(arrays)


@contextlib.contextmanager
def packed_examples():
  """TFDS's shard writing (split_builder) serialises by
  PackedExampleSerializer while the context is open."""
  saved = split_builder.example_serializer.ExampleSerializer
  split_builder.example_serializer.ExampleSerializer = PackedExampleSerializer
  try:
    yield
  finally:
    split_builder.example_serializer.ExampleSerializer = saved
