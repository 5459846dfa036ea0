"""packed_examples: records serialised by numpy are the protobuf library's
own (deterministic) serialisation of the Example TFDS builds."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.proto import tf_example_pb2, tf_feature_pb2

from mtl.data import packed_examples as pe

EDGES = [0, 1, 127, 128, 16383, 16384, 2**31 - 1, 2**32 - 1, 2**32, 2**35]
EDGES += [2**49, 2**56 - 1, 2**56, 2**63 - 1, -1, -(2**31), -(2**63)]


def _int64_list(values) -> bytes:
  return tf_feature_pb2.Feature(
    int64_list=tf_feature_pb2.Int64List(value=[int(v) for v in values])
  ).SerializeToString()


@pytest.mark.parametrize(
  'values',
  [
    np.array(EDGES, np.int64),
    np.array([0], np.int64),
    np.array([5, 2**32 - 1], np.int64),
    np.zeros((3, 0), np.int32),
    np.random.default_rng(0).integers(-(2**63), 2**63 - 1, 500),
    np.random.default_rng(1).integers(0, 2**40, 500),
    np.random.default_rng(2)
    .integers(-(2**31), 2**31 - 1, 500)
    .astype(np.int32),
    np.random.default_rng(3).integers(0, 2**21, (50, 7)).astype(np.int32),
  ],
)
def test_int_lists_are_protobufs_varints(values):
  assert pe.feature_bytes(values) == _int64_list(values.ravel())


def test_float_lists_are_protobufs():
  values = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
  values[0, :] = [np.inf, -0.0, np.nan]
  expected = tf_feature_pb2.Feature(
    float_list=tf_feature_pb2.FloatList(value=values.ravel().tolist())
  ).SerializeToString()
  assert pe.feature_bytes(values) == expected


def _features():
  def tensor(dtype, shape):
    return tfds.features.Tensor(shape=shape, dtype=dtype)

  return tfds.features.FeaturesDict(
    {
      'dense': tensor(np.float32, (None, 3)),
      'sparse': tensor(np.int32, (None, 4)),
      'row': tensor(np.int64, (None,)),
    }
  )


@pytest.mark.parametrize('n', [0, 1, 7, 1000])
def test_records_parse_to_tfds_example(n):
  rng = np.random.default_rng(n)
  features = _features()
  example = features.encode_example(
    {
      'dense': rng.normal(size=(n, 3)).astype(np.float32),
      'sparse': rng.integers(-(2**31), 2**31 - 1, (n, 4)).astype(np.int32),
      'row': rng.integers(0, 2**40, n),
    }
  )
  info = features.get_serialized_info()
  theirs = example_serializer.ExampleSerializer(info).serialize_example(example)
  ours = pe.PackedExampleSerializer(info).serialize_example(example)
  parsed = tf_example_pb2.Example.FromString(theirs)
  assert tf_example_pb2.Example.FromString(ours) == parsed
  assert ours == parsed.SerializeToString(deterministic=True)


def test_other_records_go_to_tfds():
  features = tfds.features.FeaturesDict({'name': tfds.features.Text()})
  info = features.get_serialized_info()
  example = features.encode_example({'name': 'abc'})
  theirs = example_serializer.ExampleSerializer(info).serialize_example(example)
  ours = pe.PackedExampleSerializer(info).serialize_example(example)
  assert ours == theirs


def test_the_serialiser_is_in_place_only_within_the_context():
  from tensorflow_datasets.core import split_builder

  before = split_builder.example_serializer.ExampleSerializer
  with pe.packed_examples():
    assert (
      split_builder.example_serializer.ExampleSerializer
      is pe.PackedExampleSerializer
    )
  assert split_builder.example_serializer.ExampleSerializer is before
