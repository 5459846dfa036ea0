"""What the `table` dataset's keywords describe (table.load_table's; also
streaming.py's): the schema, the files (a `variant` of `variants`, relative
paths in `manual_dir`, `sha256` sums, side tables by `joins`), the split
rule, and the TFDS builder of the prepared data with how to prepare it.
A file known by its sum may be missing once its table is prepared: the
cache is named by the sums, not by the files' paths and times.
"""

import logging
import os
import pathlib
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

import tensorflow_datasets as tfds
from absl import logging as absl_logging

from mtl.data import schema as sc
from mtl.data import schema_parse, table_files, table_splits
from mtl.data import table_builder as tb
from mtl.errors import ConfigError, DataFileNotFound

FILE_KEYWORDS = (
  'path', 'validation_path', 'test_path', 'manual_dir', 'sha256', 'source',
)  # fmt: skip
SPLIT_KEYWORDS = (
  'validation_fraction', 'test_fraction', 'split_seed', 'stratify',
  'time_column', 'user_column', 'last_n',
)  # fmt: skip


class _CustomConfig(logging.Filter):
  """Drops TFDS's warning that a builder config is not predefined."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith('Using custom data config')


def _to_dict(d) -> dict:
  """A plain (nested) dict of a ConfigDict, FrozenConfigDict or dict."""
  if hasattr(d, 'to_dict'):
    return d.to_dict()
  if isinstance(d, Mapping):
    return {
      k: _to_dict(v) if isinstance(v, Mapping) else v for k, v in d.items()
    }
  return d


JOIN_KEYS = {
  'path': None, 'on': None, 'key': None, 'column_names': (),
  'delimiter': None, 'file_format': 'auto', 'encoding': 'utf-8',
  'sha256': None,
}  # fmt: skip


def _join_entry(where: str, entry) -> dict:
  """A `joins` entry with its defaults; unknown or missing keys fail."""
  if not isinstance(entry, Mapping):
    raise ConfigError(f'dataset.{where} is {entry!r}, expected a dict')
  for key in entry:
    if key not in JOIN_KEYS:
      raise ConfigError(
        f'dataset.{where} has unknown key {key!r}, expected some of '
        f'{", ".join(JOIN_KEYS)}'
      )
  for key in ('path', 'on'):
    if not entry.get(key):
      raise ConfigError(f'dataset.{where} is missing key {key!r}')
  return JOIN_KEYS | dict(entry)


def _source(
  key: str, path, folder, fmt: str, delimiter, column_names, encoding='utf-8'
):
  """The Source of file keyword `key` (a relative path is in `folder`); the
  file need not exist yet (load_table names every missing one at once)."""
  if path is None:
    raise ConfigError(f'dataset.{key} is not set, expected a file')
  path = _expand(key, path)
  if folder is not None and not path.is_absolute():
    path = _expand('manual_dir', folder) / path
  fmt = table_files.file_format(path, fmt)
  if delimiter is not None and (
    fmt == 'parquet' or not isinstance(delimiter, str) or len(delimiter) != 1
  ):
    raise ConfigError(
      f'dataset.delimiter is {delimiter!r}, expected one character for a '
      'CSV/TSV file (or unset)'
    )
  return table_files.Source(
    str(path), fmt, delimiter, tuple(column_names), encoding
  )


def _expand(key: str, path) -> pathlib.Path:
  """`path` with its $VARS and ~ expanded; an unset $VAR is a ConfigError."""
  text = os.path.expandvars(str(path))
  unset = re.search(r'\$\{?(\w+)', text)
  if unset:
    raise ConfigError(
      f'dataset.{key} is {str(path)!r}: ${unset[1]} is not set, expected '
      'it to name a folder'
    )
  return pathlib.Path(text).expanduser()


def _variant(variant, variants: dict, given: dict) -> dict:
  """The file keywords `given`, those left unset (None or empty) taken from
  `variants[variant]`."""
  if not variants and variant is None:
    return given
  if variant not in variants:
    raise ConfigError(
      f'dataset.variant is {variant!r}, expected one of '
      f'{", ".join(variants) or "(none: dataset.variants is empty)"}'
    )
  chosen = variants[variant]
  for key in chosen:
    if key not in given:
      raise ConfigError(
        f'dataset.variants.{variant} has unknown key {key!r}, expected '
        f'some of {", ".join(given)}'
      )
  return {k: v if v else chosen.get(k, v) for k, v in given.items()}


def _missing(name: str, paths, source) -> str:
  """The message naming missing files and where they come from."""
  where = f'; {source}' if source else ''
  return f'{name}: file(s) not found: {", ".join(map(str, paths))}{where}'


def _split(**kw) -> dict:
  rule = kw['rule']
  tb_rules = table_splits.SPLIT_RULES
  if rule not in tb_rules:
    raise ConfigError(
      f'dataset.split is {rule!r}, expected one of {", ".join(tb_rules)}'
    )
  fractions = (kw['validation_fraction'], kw['test_fraction'])
  if rule == 'files':
    if not kw['holdout']:
      return {'rule': rule}
    if not 0 < fractions[0] < 1:
      raise ConfigError(
        f'dataset.validation_fraction is {fractions[0]!r}, expected a number '
        'in (0, 1) (the share of the training file held out: no '
        'validation_path)'
      )
    return {
      'rule': rule,
      'holdout': {
        'fraction': float(fractions[0]),
        'seed': int(kw['split_seed']),
        'stratify': list(kw['stratify']),
      },
    }
  if rule != 'user_last' and not (min(fractions) > 0 and sum(fractions) < 1):
    raise ConfigError(
      f'dataset.validation_fraction {fractions[0]!r} and test_fraction '
      f'{fractions[1]!r}, expected positive numbers with a sum below 1'
    )
  out = {'rule': rule}
  if rule == 'random':
    out.update(
      validation_fraction=float(fractions[0]),
      test_fraction=float(fractions[1]),
      seed=int(kw['split_seed']),
    )
  if rule in ('time', 'user_last'):
    if not kw['time_column']:
      raise ConfigError(
        f'dataset.time_column is not set, expected it for split {rule!r}'
      )
    out['time_column'] = kw['time_column']
  if rule == 'time':
    out.update(
      validation_fraction=float(fractions[0]), test_fraction=float(fractions[1])
    )
  if rule == 'user_last':
    if not kw['user_column']:
      raise ConfigError(
        "dataset.user_column is not set, expected it for split 'user_last'"
      )
    if isinstance(kw['last_n'], bool) or not isinstance(kw['last_n'], int):
      raise ConfigError(f'dataset.last_n is {kw["last_n"]!r}, expected an int')
    if kw['last_n'] < 1:
      raise ConfigError(f'dataset.last_n is {kw["last_n"]}, expected >= 1')
    out.update(user_column=kw['user_column'], last_n=kw['last_n'])
  return out


class Described(NamedTuple):
  """A table's schema, its prepared data's builder and how to prepare it."""

  schema: sc.Schema
  make_builder: Callable[[], tb.Table]
  prepare: Callable[[tb.Table], None]
  raw_missing: Callable[[], list[str]]


def describe(**kw) -> Described:
  """What load_table's keywords describe (checked: ConfigError, or
  DataFileNotFound for a file that is missing and has no sha256)."""
  name, chunksize = kw['name'], kw['chunksize']
  beam_options = kw.get('beam_options')
  if beam_options is not None:
    if isinstance(beam_options, str) or not all(
      isinstance(o, str) for o in beam_options
    ):
      raise ConfigError(
        f'dataset.beam_options is {beam_options!r}, expected a tuple of Beam '
        "pipeline flags like ('--direct_num_workers=2',), or None"
      )
    beam_options = tuple(beam_options)
  features, tasks = _to_dict(kw['features']), _to_dict(kw['tasks'])
  task_order = tuple(kw['task_order'])
  schema = schema_parse.parse(features, tasks, task_order)
  if kw['file_format'] not in table_files.FORMATS:
    raise ConfigError(
      f'dataset.file_format is {kw["file_format"]!r}, expected one of '
      f'{", ".join(table_files.FORMATS)}'
    )
  if not isinstance(chunksize, int) or isinstance(chunksize, bool):
    raise ConfigError(f'dataset.chunksize is {chunksize!r}, expected an int')
  if chunksize < 1:
    raise ConfigError(f'dataset.chunksize is {chunksize}, expected >= 1')
  files = _variant(
    kw['variant'],
    _to_dict(kw['variants']),
    {k: kw[k] for k in FILE_KEYWORDS} | {'sha256': _to_dict(kw['sha256'])},
  )
  sums = dict(files['sha256'] or {})
  split = kw['split']
  roles = {'path': 'train', 'validation_path': 'validation'}
  roles['test_path'] = 'test'
  if split != 'files':
    for key in ('validation_path', 'test_path'):
      if files[key] is not None:
        raise ConfigError(
          f"dataset.{key} is set with split {split!r}, expected split='files' "
          '(or no such file: the table is split by the rule)'
        )
    roles = {'path': 'table'}
  elif files['validation_path'] is None:
    del roles['validation_path']  # Held out of the training file.
  for key in sums:
    if key not in roles:
      raise ConfigError(
        f'dataset.sha256 names {key!r}, expected some of {", ".join(roles)}'
      )
  split_spec = _split(
    rule=split,
    holdout=split == 'files' and 'validation_path' not in roles,
    **{k: kw[k] for k in SPLIT_KEYWORDS},
  )
  sources = {
    role: _source(
      key,
      files[key],
      files['manual_dir'],
      kw['file_format'],
      kw['delimiter'],
      kw['column_names'],
    )  # fmt: skip
    for key, role in roles.items()
  }
  sums = {roles[k]: v for k, v in sums.items()}
  joins = {}
  for join, entry in _to_dict(kw['joins']).items():
    where = f'joins.{join}'
    entry = _join_entry(where, entry)
    sources[f'join:{join}'] = _source(
      f'{where}.path', entry['path'], files['manual_dir'],
      entry['file_format'], entry['delimiter'], entry['column_names'],
      entry['encoding'],
    )  # fmt: skip
    if entry['sha256']:
      sums[f'join:{join}'] = entry['sha256']
    joins[join] = {'on': entry['on'], 'key': entry['key'] or entry['on']}

  def raw_missing():
    return [
      s.path for s in sources.values() if not pathlib.Path(s.path).is_file()
    ]

  missing = {r for r, s in sources.items() if s.path in raw_missing()}
  if missing - set(sums):  # A file known by its sum may be cached.
    raise DataFileNotFound(_missing(name, raw_missing(), files['source']))
  spec = tb.spec_of(
    name=name,
    sources=sources,
    sha256=sums,
    split=split_spec,
    features=features,
    tasks=tasks,
    task_order=task_order,
    joins=joins,
  )

  def make_builder():
    quiet = _CustomConfig()  # Every table has its own config: no news.
    absl_logging.get_absl_logger().addFilter(quiet)
    try:
      return tb.Table(
        config=tb.TableConfig(spec=spec),
        data_dir=kw['data_dir'],
        file_format='array_record',
        chunksize=chunksize,
        beam_options=beam_options,
      )
    finally:
      absl_logging.get_absl_logger().removeFilter(quiet)

  def prepare(builder):
    if raw_missing():
      raise DataFileNotFound(_missing(name, raw_missing(), files['source']))
    for role, expected in sums.items():
      table_files.check_sha256(name, sources[role].path, expected)
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )

  return Described(schema, make_builder, prepare, raw_missing)
