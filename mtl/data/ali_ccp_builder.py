"""TFDS builder for Ali-CCP in torch-rechub's preprocessed CSV layout.

Source: Ma et al., "Entire Space Multi-Task Model: An Effective Approach for
Estimating Post-Click Conversion Rate", SIGIR 2018 (Tianchi dataset 408,
research use), as preprocessed by torch-rechub following the AITM script
(sparse fields label-encoded, dense fields normalised): every file has the
header `click,purchase`, the 23 sparse fields `101 ... 150_14` and the 8 dense
fields whose names start with 'D' (`D109_14 ... D853`), as torch-rechub's
run_ali_ccp_multi_task.py reads them (shared/data/README.md, section 4).

Configs: 'sample' reads torch-rechub's ali_ccp_{train,val,test}_sample.csv
(100/50/50 rows; sha256 registered in ali_ccp_checksums.tsv); 'full' reads
ali_ccp_{train,val,test}.csv of the same layout from the manual directory
(no checksums are published for them, so none are checked).

The builder prepares, streaming every file in chunks of `chunksize` rows:
- dense [N, 8] float32: each D column standardised with the TRAINING file's
  mean and population std (a constant column gets std 1: in the sample four
  of the eight are constant);
- sparse [N, 23] int32: each field's ids re-encoded with a vocabulary of its
  TRAINING values (0: a value never seen in training, 1..: the training
  values in increasing order), so that val/test ids never index past a table;
- click, purchase [N] int32, and row [N], the row's place in its file.
TFDS splits: 'train', 'validation', 'test' are the three files.
"""

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from mtl.data import csv_builder as cb

LABELS = ('click', 'purchase')
SPARSE = tuple(
  '101 121 122 124 125 126 127 128 129 205 206 207 210 216 508 509 702 853 '
  '301 109_14 110_14 127_14 150_14'.split()
)
DENSE = tuple('D109_14 D110_14 D127_14 D150_14 D508 D509 D702 D853'.split())
COLUMNS = LABELS + SPARSE + DENSE
SOURCE = (
  'https://raw.githubusercontent.com/datawhalechina/torch-rechub/'
  '5a73b2eebc3a670dc64c54971cc06a78ddd55394/examples/ranking/data/ali-ccp/'
)
FILES = {
  'sample': {
    'train': 'ali_ccp_train_sample.csv',
    'validation': 'ali_ccp_val_sample.csv',
    'test': 'ali_ccp_test_sample.csv',
  },
  'full': {
    'train': 'ali_ccp_train.csv',
    'validation': 'ali_ccp_val.csv',
    'test': 'ali_ccp_test.csv',
  },
}
CHECKSUMS = pathlib.Path(__file__).with_name('ali_ccp_checksums.tsv')


def parse_chunk(chunk, start: int, path) -> dict[str, np.ndarray]:
  """A raw chunk as int64 labels and ids and float64 dense values."""

  def stack(names, kind):
    return np.stack([cb.column(chunk, n, start, path, kind) for n in names], 1)

  return {
    'click': cb.column(chunk, 'click', start, path, 'label'),
    'purchase': cb.column(chunk, 'purchase', start, path, 'label'),
    'sparse': stack(SPARSE, 'id'),
    'dense': stack(DENSE, 'number'),
  }


def fit_encoding(path, chunksize: int) -> dict:
  """Vocabularies and dense moments: one streaming pass over TRAINING rows."""
  vocabulary, moments = cb.Vocabulary(SPARSE), cb.Moments(DENSE)
  for start, chunk in cb.read_chunks(path, chunksize=chunksize):
    parsed = parse_chunk(chunk, start, path)
    vocabulary.update(dict(zip(SPARSE, parsed['sparse'].T, strict=True)))
    moments.update(parsed['dense'])
  return {'vocabularies': vocabulary.finish(), 'dense': moments.finish()}


class AliCcp(cb.CsvBuilder):
  """Ali-CCP (torch-rechub layout), encoded with training vocabularies."""

  name = 'ali_ccp'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Streamed, encoded blocks of chunksize rows.'}
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name='sample', description='torch-rechub sample'),
    tfds.core.BuilderConfig(name='full', description='the full data'),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    'sample: ali_ccp_{train,val,test}_sample.csv from ' + SOURCE + '; '
    'full: ali_ccp_{train,val,test}.csv, Tianchi dataset 408 in the same '
    'torch-rechub layout.'
  )
  CHECKSUMS = CHECKSUMS
  DENSE = DENSE
  SPARSE = SPARSE
  LABELS = {'click': np.int32, 'purchase': np.int32}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description='Ali-CCP (ESMM) in torch-rechub layout, encoded for mtl.',
      features=self._features(),
      homepage='https://tianchi.aliyun.com/dataset/408',
      metadata=tfds.core.MetadataDict(),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    files = FILES[self.builder_config.name]
    if self.builder_config.name == 'sample':
      paths = dl_manager.download({s: SOURCE + f for s, f in files.items()})
    else:
      paths = {s: dl_manager.manual_dir / f for s, f in files.items()}
    for path in paths.values():
      cb.read_header(path, COLUMNS)
    encoding = fit_encoding(paths['train'], self.chunksize)
    self.info.metadata.update(encoding)
    return {
      split: self._generate_examples(
        split_name=split, path=path, encoding=encoding
      )
      for split, path in paths.items()
    }

  def _encoded_chunks(self, path, encoding):
    vocabularies = encoding['vocabularies']
    for start, chunk in cb.read_chunks(path, chunksize=self.chunksize):
      parsed = parse_chunk(chunk, start, path)
      ids = [
        cb.lookup(parsed['sparse'][:, j], vocabularies[name])
        for j, name in enumerate(SPARSE)
      ]
      yield {
        'dense': cb.standardise(parsed['dense'], encoding['dense'], DENSE),
        'sparse': np.stack(ids, axis=1),
        'click': parsed['click'].astype(np.int32),
        'purchase': parsed['purchase'].astype(np.int32),
        'row': np.arange(start, start + len(chunk), dtype=np.int64),
      }
