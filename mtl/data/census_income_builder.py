"""TFDS builder for UCI Census-Income (KDD): raw files -> encoded arrays.

Source: UCI Machine Learning Repository, "Census-Income (KDD)" (dataset 117,
files census-income-mld/census-income.{data,test}.gz, CC BY 4.0), weighted
1994/1995 Current Population Survey extracts donated by Terran Lane and Ronny
Kohavi. Column order from UCI's census-income.names (shared/data/README.md).
Tasks as in Ma et al., "Modeling Task Relationships in Multi-task Learning
with Multi-gate Mixture-of-Experts", KDD 2018, Sec. 6.3.

The builder prepares ONE encoded form that every protocol reads; which
columns are inputs and which tasks are labels is chosen at load time
(census_income.py):

- dense [N, 7] float32: the numeric columns, standardised with the TRAINING
  split's mean and (population) std. The four money columns (wage per hour,
  capital gains, capital losses, dividends) are over 90 % zeros with values
  up to 99,999, so they go through log1p first; standardised raw, a single
  capital-gains value would sit 20 std from the mean.
- categorical [N, 33] int32: every other column except the instance weight
  (col 24, which UCI says not to use) and the income label. Ids come from a
  vocabulary of the TRAINING values (sorted as strings): 0 is a value never
  seen in training, 1.. the training values. `?` (missing) is kept as a value
  of its own: it is common and informative (the migration questions were not
  asked in 1994, so about half of those fields are `?`).
- income, marital, education [N] int32 labels (see census_income.py), and
  row [N], the record's position in its raw file.

TFDS splits are the UCI files: 'train' (199,523 rows) and 'test' (99,762).
Rows are stored in blocks of BLOCK_ROWS per record: reading 300k one-row
records back through a TFDS data source took 24 s on the 2-core CI machine,
because TFDS decodes each record in Python; ~40 blocks take well under 1 s.
"""

import csv
import gzip
import pathlib

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from mtl import errors
from mtl.data import cache, csv_builder
from mtl.data.table_files import numbers

COLUMNS = (
  'age',  # 0
  'class_of_worker',
  'detailed_industry_recode',
  'detailed_occupation_recode',
  'education',
  'wage_per_hour',  # 5
  'enroll_in_edu_inst_last_wk',
  'marital_stat',
  'major_industry_code',
  'major_occupation_code',
  'race',  # 10
  'hispanic_origin',
  'sex',
  'member_of_a_labor_union',
  'reason_for_unemployment',
  'full_or_part_time_employment_stat',  # 15
  'capital_gains',
  'capital_losses',
  'dividends_from_stocks',
  'tax_filer_stat',
  'region_of_previous_residence',  # 20
  'state_of_previous_residence',
  'detailed_household_and_family_stat',
  'detailed_household_summary_in_household',
  'instance_weight',
  'migration_code_change_in_msa',  # 25
  'migration_code_change_in_reg',
  'migration_code_move_within_reg',
  'live_in_this_house_1_year_ago',
  'migration_prev_res_in_sunbelt',
  'num_persons_worked_for_employer',  # 30
  'family_members_under_18',
  'country_of_birth_father',
  'country_of_birth_mother',
  'country_of_birth_self',
  'citizenship',  # 35
  'own_business_or_self_employed',
  'fill_inc_questionnaire_for_veterans_admin',
  'veterans_benefits',
  'weeks_worked_in_year',
  'year',  # 40
  'income',
)
DENSE = tuple(COLUMNS[i] for i in (0, 5, 16, 17, 18, 30, 39))
LOG1P = (
  'wage_per_hour',
  'capital_gains',
  'capital_losses',
  'dividends_from_stocks',
)
CATEGORICAL = tuple(
  c for c in COLUMNS if c not in DENSE + ('instance_weight', 'income')
)
INCOME_VALUES = ('- 50000.', '50000+.')
# "Education level is at least college": a completed college degree, from
# Associates upwards. 'Some college but no degree' is below that line.
COLLEGE_DEGREES = (
  'Associates degree-academic program',
  'Associates degree-occup /vocational',
  'Bachelors degree(BA AB BS)',
  'Masters degree(MA MS MEng MEd MSW MBA)',
  'Prof school degree (MD DDS DVM LLB JD)',
  'Doctorate degree(PhD EdD)',
)
LABELS = ('income', 'marital', 'education')
URLS = {
  'train': 'https://archive.ics.uci.edu/ml/machine-learning-databases/'
  'census-income-mld/census-income.data.gz',
  'test': 'https://archive.ics.uci.edu/ml/machine-learning-databases/'
  'census-income-mld/census-income.test.gz',
}
CHECKSUMS = pathlib.Path(__file__).with_name('census_income_checksums.tsv')
BLOCK_ROWS = 8192


# A raw data file is malformed, or (RawFilesMissingError, also a
# FileNotFoundError) missing; the message is one line.
DataError = errors.DataError
RawFilesMissingError = errors.DataFileNotFound


def _first_bad_row(path: pathlib.Path) -> tuple[int, int] | None:
  """(1-based row, field count) of the first row without 42 fields."""
  opener = gzip.open if path.suffix == '.gz' else open
  with opener(path, 'rt', newline='', errors='replace') as f:
    rows = (r for r in csv.reader(f, skipinitialspace=True) if r)
    for number, row in enumerate(rows, start=1):
      if len(row) != len(COLUMNS):
        return number, len(row)
  return None


def read_raw(path: str | pathlib.Path) -> pd.DataFrame:
  """Reads one raw UCI file: dense columns as float64, the others as str.

  Raises:
    DataError: a row without 42 fields, an empty field, a non-numeric value
      in a numeric column or an unknown income label (named by file and
      1-based row, blank lines not counted).
  """
  path = pathlib.Path(path)
  csv_builder.check_rows(path, header=False)
  try:
    df = pd.read_csv(
      path,
      header=None,
      skipinitialspace=True,
      dtype=str,
      keep_default_na=False,
      na_values=[''],  # so short rows and empty fields show up as NaN
    )
  except pd.errors.ParserError as err:  # a row longer than the first one
    df, parse_error = None, ' '.join(str(err).split())
  except UnicodeDecodeError as err:
    raise csv_builder.not_utf8(path, names=COLUMNS, header=False) from err
  if df is None or df.shape[1] != len(COLUMNS) or df.isna().any(axis=None):
    if bad := _first_bad_row(path):
      raise DataError(
        f'{path}: row {bad[0]} has {bad[1]} columns, '
        f'expected {len(COLUMNS)} comma-separated columns'
      )
    if df is None:
      raise DataError(f'{path}: cannot be parsed as CSV ({parse_error})')
    row, col = np.argwhere(df.isna().to_numpy())[0]
    raise DataError(
      f'{path}: row {row + 1} column {COLUMNS[col]!r} is empty, '
      "expected a value ('?' for missing)"
    )
  df.columns = COLUMNS
  for name in DENSE:
    values = pd.to_numeric(df[name], errors='coerce')
    if values.isna().any():
      row = int(np.argmax(values.isna().to_numpy()))
      raise DataError(
        f'{path}: row {row + 1} column {name!r} is {df[name].iloc[row]!r}, '
        'expected a number'
      )
    df[name] = values.astype(np.float64)
  unknown = ~df['income'].isin(INCOME_VALUES)
  if unknown.any():
    row = int(np.argmax(unknown.to_numpy()))
    raise DataError(
      f'{path}: row {row + 1} income label is {df["income"].iloc[row]!r}, '
      f'expected one of {INCOME_VALUES}'
    )
  return df


def _dense_input(df: pd.DataFrame, name: str) -> np.ndarray:
  x = df[name].to_numpy(np.float64)
  return np.log1p(x) if name in LOG1P else x


def fit_encoding(train: pd.DataFrame) -> dict:
  """Vocabularies and dense statistics, from the TRAINING rows only."""
  dense = {}
  for name in DENSE:
    x = _dense_input(train, name)
    std = float(x.std())
    dense[name] = {
      'log1p': name in LOG1P,
      'mean': float(x.mean()),
      'std': std if std > 0 else 1.0,
    }
  vocabularies = {n: sorted(train[n].unique().tolist()) for n in CATEGORICAL}
  return {'dense': dense, 'vocabularies': vocabularies}


def encode(df: pd.DataFrame, encoding: dict) -> dict[str, np.ndarray]:
  """Encodes raw rows with a fitted encoding; unseen values map to id 0."""
  dense = [
    (_dense_input(df, n) - s['mean']) / s['std']
    for n, s in encoding['dense'].items()
  ]
  # get_indexer gives -1 for a value not in the vocabulary: OOV id 0.
  categorical = [
    pd.Index(vocab).get_indexer(df[n]).astype(np.int32) + 1
    for n, vocab in encoding['vocabularies'].items()
  ]
  return {
    'dense': np.stack(dense, axis=1).astype(np.float32),
    'categorical': np.stack(categorical, axis=1),
    'income': (df['income'] == INCOME_VALUES[1]).to_numpy(np.int32),
    'marital': (df['marital_stat'] == 'Never married').to_numpy(np.int32),
    'education': df['education'].isin(COLLEGE_DEGREES).to_numpy(np.int32),
    'row': np.arange(len(df), dtype=np.int32),
  }


class CensusIncome(cache.Builder):
  """UCI Census-Income (KDD), encoded with training-split vocabularies."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Encoded arrays in blocks of 8192 rows.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    'Place census-income.data.gz and census-income.test.gz from '
    'https://archive.ics.uci.edu/ml/machine-learning-databases/'
    'census-income-mld/ in the manual directory (by default '
    '$MTL_DATA_DIR/census-income-kdd).'
  )

  @tfds.core.utils.classproperty
  @classmethod
  def _checksums_path(cls) -> pathlib.Path:
    # TFDS looks for checksums.tsv beside the module, but mtl/data holds
    # several builders, so this one names its file. (TFDS's default lookup
    # also needs the importlib_resources backport, which is not installed.)
    return CHECKSUMS

  def _info(self) -> tfds.core.DatasetInfo:
    rows = tfds.features.Tensor(shape=(None,), dtype=np.int32)
    return tfds.core.DatasetInfo(
      builder=self,
      description='UCI Census-Income (KDD), encoded for mtl.',
      features=tfds.features.FeaturesDict(
        {
          'dense': tfds.features.Tensor(
            shape=(None, len(DENSE)), dtype=np.float32
          ),
          'categorical': tfds.features.Tensor(
            shape=(None, len(CATEGORICAL)), dtype=np.int32
          ),
          **{name: rows for name in LABELS + ('row',)},
        }
      ),
      homepage='https://archive.ics.uci.edu/dataset/117/census+income+kdd',
      license='CC BY 4.0',
      metadata=tfds.core.MetadataDict(),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    paths = dl_manager.download(URLS)
    frames = {split: read_raw(path) for split, path in paths.items()}
    encoding = fit_encoding(frames['train'])
    self.info.metadata.update(encoding)
    return {
      split: self._generate_examples(encode(df, encoding))
      for split, df in frames.items()
    }

  def _generate_examples(self, arrays: dict[str, np.ndarray]):
    n = len(arrays['row'])
    for key, start in enumerate(range(0, n, BLOCK_ROWS)):
      yield key, {k: a[start : start + BLOCK_ROWS] for k, a in arrays.items()}


def encode_rows(chunk, offsets, path, artefact: dict, labels: bool = False):
  """(inputs {'dense', 'sparse'}, `encode`'s arrays) of raw rows (a chunk
  of text, `offsets` their 0-based file rows) under a run's
  preprocessing artefact (mtl.data.preprocessing.Encoder)."""
  df = pd.DataFrame(index=chunk.index)
  for c in COLUMNS:
    if c in DENSE:
      df[c] = numbers(chunk, c, offsets, path)
    elif c in chunk:
      df[c] = chunk[c].astype(object).where(chunk[c].notna(), '?')
      df[c] = df[c].astype(str).str.lstrip()  # skipinitialspace, as read_raw
    else:
      df[c] = '?'  # Not an input: a placeholder encode() reads past.
  if labels and 'income' in chunk:
    bad = ~df['income'].isin(INCOME_VALUES)
    if bad.any():
      i = int(np.argmax(bad.to_numpy()))
      raise errors.DataError(
        f'{path}: row {offsets[i] + 1} income label is '
        f'{df["income"].iloc[i]!r}, expected one of {INCOME_VALUES}'
      )
  enc = artefact['encoding']  # JSON keys are sorted: builder order.
  arrays = encode(
    df,
    {
      'dense': {n: enc['dense'][n] for n in DENSE},
      'vocabularies': {n: enc['vocabularies'][n] for n in CATEGORICAL},
    },
  )
  cols = [CATEGORICAL.index(c) for c in artefact['sparse_names']]
  return {
    'dense': arrays['dense'],
    'sparse': np.ascontiguousarray(arrays['categorical'][:, cols]),
  }, arrays
