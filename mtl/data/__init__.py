"""Dataset loaders by name: each takes keyword arguments and returns a Dataset.

See dataset.py for the in-memory layout and docs/ARCHITECTURE.md §4 for how
real datasets are prepared (TFDS builders, array_record, training-split
vocabularies). A keyword a loader does not take is a ConfigError naming the
dataset and the keyword (the config's `dataset` entry is the loader's
keywords).
"""

import functools
import inspect

from mtl.data.census_income import load_census_income
from mtl.data.entire_space import load_entire_space
from mtl.data.synthetic import load_synthetic
from mtl.data.table import load_table
from mtl.errors import ConfigError, did_you_mean


def _checked(name: str, load):
  """`load`, with an unknown keyword as a ConfigError instead of TypeError."""
  params = inspect.signature(load).parameters
  known = [
    p.name
    for p in params.values()
    if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
  ]

  @functools.wraps(load)
  def checked(**kwargs):
    unknown = [k for k in kwargs if k not in known]
    if unknown:
      hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ''
      raise ConfigError(
        f'dataset {name!r} got unexpected keyword'
        f'{"s" if len(unknown) > 1 else ""} '
        f'{", ".join(repr(k) for k in unknown)}{hint}: it takes '
        f'{", ".join(known)}'
      )
    return load(**kwargs)

  return checked


DATASETS = {
  name: _checked(name, load)
  for name, load in {
    'census_income': load_census_income,
    'entire_space': load_entire_space,
    'synthetic': load_synthetic,
    'table': load_table,
  }.items()
}
