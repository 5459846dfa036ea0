"""TFDS builder for AliExpress in the MTReclib CSV layout.

Source: the AliExpress search logs of Li et al., "Improving Multi-Scenario
Learning to Rank in E-commerce by Exploiting Task Relationships in the Label
Space", CIKM 2020 (Tianchi dataset 74690), in the layout of MTReclib
(easezyc/Multitask-Recommendation-Library, datasets/aliexpress.py): header
`search_id, categorical_1..16, numerical_1..63, click, conversion`. Like
MTReclib, search_id (the query a row belongs to) is not an input.

Configs (built by `config`): variant 'sample' reads torch-rechub's
aliexpress_{train,test}_sample.csv (100 and 20 rows of the US subset; sha256
registered in aliexpress_checksums.tsv); 'full' reads one country's train.csv
and test.csv (MTReclib's AliExpress_<country>/ folders; no checksums are
published, so none are checked).

The raw data has only train and test, so VALIDATION IS A SEEDED FRACTION OF
THE TRAIN FILE, decided before any statistic is taken: stratified by the
(click, conversion) pair, each of the four groups of n train rows gives
round(fraction * n) rows chosen at random (numpy default_rng(seed)), but at
least one and at most n - 1 when n >= 2, so that a rare label (the sample has
2 conversions) has a positive on both sides. The split is a function of the
labels, the fraction and the seed only, not of the chunk size. It costs one
byte per train row (the group) and a streamed pass over the two label
columns; the files themselves are always streamed.

Encoding, from the TRAINING rows only (streamed in chunks of `chunksize`):
- dense [N, 63] float32: numerical_1..63 standardised with the training
  mean and population std (a constant column gets std 1);
- sparse [N, 16] int32: categorical_1..16 re-encoded with a vocabulary of
  the training values (0: unseen in training, 1..: the sorted values);
- click, conversion [N] int32, and row [N], the row's place in its file.
TFDS splits: 'train', 'validation' (both from the train file) and 'test'.
"""

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from mtl.data import csv_builder as cb

LABELS = ('click', 'conversion')
SPARSE = tuple(f'categorical_{i}' for i in range(1, 17))
DENSE = tuple(f'numerical_{i}' for i in range(1, 64))
COLUMNS = ('search_id',) + SPARSE + DENSE + LABELS
SOURCE = (
  'https://raw.githubusercontent.com/datawhalechina/torch-rechub/'
  '5a73b2eebc3a670dc64c54971cc06a78ddd55394/examples/ranking/data/'
  'aliexpress/'
)
FILES = {
  'sample': {
    'train': 'aliexpress_train_sample.csv',
    'test': 'aliexpress_test_sample.csv',
  },
  'full': {'train': 'train.csv', 'test': 'test.csv'},
}
CHECKSUMS = pathlib.Path(__file__).with_name('aliexpress_checksums.tsv')


class AliExpressConfig(tfds.core.BuilderConfig):
  """Variant, validation fraction and split seed (all change the cache)."""

  def __init__(self, *, variant: str, validation_fraction: float, seed: int):
    super().__init__(
      name=f'{variant}-val{validation_fraction:g}-seed{seed}',
      description=f'{variant} files, validation {validation_fraction:g} of '
      f'train (seed {seed})',
    )
    self.variant = variant
    self.validation_fraction = validation_fraction
    self.seed = seed


def validation_rows(path, chunksize: int, fraction: float, seed: int):
  """bool [N]: the train-file rows that form the validation split."""
  groups = []
  for start, chunk in cb.read_chunks(
    path, chunksize=chunksize, usecols=list(LABELS)
  ):
    click = cb.column(chunk, 'click', start, path, 'label')
    conversion = cb.column(chunk, 'conversion', start, path, 'label')
    groups.append((2 * click + conversion).astype(np.int8))
  groups = np.concatenate(groups) if groups else np.zeros(0, np.int8)
  rng = np.random.default_rng(seed)
  chosen = np.zeros(len(groups), bool)
  for group in range(4):
    rows = np.flatnonzero(groups == group)
    k = round(fraction * len(rows))
    if len(rows) >= 2:
      k = min(max(k, 1), len(rows) - 1)
    chosen[rng.choice(rows, size=k, replace=False)] = True
  return chosen


def parse_chunk(chunk, start: int, path) -> dict[str, np.ndarray]:
  """A raw chunk as int64 labels and ids and float64 dense values."""

  def stack(names, kind):
    return np.stack([cb.column(chunk, n, start, path, kind) for n in names], 1)

  parsed = {n: cb.column(chunk, n, start, path, 'label') for n in LABELS}
  parsed['sparse'] = stack(SPARSE, 'id')
  parsed['dense'] = stack(DENSE, 'number')
  parsed['row'] = np.arange(start, start + len(chunk), dtype=np.int64)
  return parsed


def parsed_chunks(path, chunksize: int, keep: np.ndarray | None):
  """Parsed chunks of a file, only the rows where `keep` (if given)."""
  for start, chunk in cb.read_chunks(path, chunksize=chunksize):
    parsed = parse_chunk(chunk, start, path)
    if keep is not None:
      rows = keep[start : start + len(chunk)]
      parsed = {k: a[rows] for k, a in parsed.items()}
    yield parsed


class AliExpress(cb.CsvBuilder):
  """AliExpress (MTReclib layout), encoded with training vocabularies."""

  name = 'aliexpress'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Streamed, encoded blocks of chunksize rows.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    'sample: aliexpress_{train,test}_sample.csv from ' + SOURCE + '; '
    "full: one country's train.csv and test.csv of Tianchi dataset 74690 "
    'in the MTReclib layout.'
  )
  BUILDER_CONFIGS = [
    AliExpressConfig(variant=v, validation_fraction=0.1, seed=0) for v in FILES
  ]
  CHECKSUMS = CHECKSUMS
  DENSE = DENSE
  SPARSE = SPARSE
  LABELS = {'click': np.int32, 'conversion': np.int32}

  @classmethod
  def config(cls, **params) -> AliExpressConfig:
    """The config of these parameters (a predefined one if it exists)."""
    new = AliExpressConfig(**params)
    return cls.builder_configs.get(new.name, new)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description='AliExpress (MTReclib layout), encoded for mtl.',
      features=self._features(),
      homepage='https://tianchi.aliyun.com/dataset/74690',
      metadata=tfds.core.MetadataDict(),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    config = self.builder_config
    files = FILES[config.variant]
    if config.variant == 'sample':
      paths = dl_manager.download({s: SOURCE + f for s, f in files.items()})
    else:
      paths = {s: dl_manager.manual_dir / f for s, f in files.items()}
    for path in paths.values():
      cb.read_header(path, COLUMNS)
    validation = validation_rows(
      paths['train'],
      self.chunksize,
      config.validation_fraction,
      config.seed,
    )
    vocabulary, moments = cb.Vocabulary(SPARSE), cb.Moments(DENSE)
    for parsed in parsed_chunks(paths['train'], self.chunksize, ~validation):
      vocabulary.update(dict(zip(SPARSE, parsed['sparse'].T, strict=True)))
      moments.update(parsed['dense'])
    encoding = {'vocabularies': vocabulary.finish(), 'dense': moments.finish()}
    self.info.metadata.update(encoding)
    sources = {
      'train': (paths['train'], ~validation),
      'validation': (paths['train'], validation),
      'test': (paths['test'], None),
    }
    return {
      split: self._generate_examples(
        split_name=split, path=path, keep=keep, encoding=encoding
      )
      for split, (path, keep) in sources.items()
    }

  def _encoded_chunks(self, path, keep, encoding):
    vocabularies = encoding['vocabularies']
    for parsed in parsed_chunks(path, self.chunksize, keep):
      ids = [
        cb.lookup(parsed['sparse'][:, j], vocabularies[name])
        for j, name in enumerate(SPARSE)
      ]
      yield {
        'dense': cb.standardise(parsed['dense'], encoding['dense'], DENSE),
        'sparse': np.stack(ids, axis=1),
        'click': parsed['click'].astype(np.int32),
        'conversion': parsed['conversion'].astype(np.int32),
        'row': parsed['row'],
      }
