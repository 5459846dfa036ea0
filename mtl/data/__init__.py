"""Dataset loaders by name: each takes keyword arguments and returns a Dataset.

See dataset.py for the in-memory layout and DESIGN.md §7 for how real
datasets are prepared (TFDS builders, array_record, training-split
vocabularies).
"""

from mtl.data.census_income import load_census_income
from mtl.data.synthetic import load_synthetic

DATASETS = {
  'census_income': load_census_income,
  'synthetic': load_synthetic,
}
