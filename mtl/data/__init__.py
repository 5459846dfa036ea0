"""Dataset loaders by name: each takes keyword arguments and returns a Dataset.

See dataset.py for the in-memory layout and DESIGN.md §7 for how real
datasets are prepared (TFDS builders, array_record, training-split
vocabularies).
"""

from mtl.data.ali_ccp import load_ali_ccp
from mtl.data.aliexpress import load_aliexpress
from mtl.data.census_income import load_census_income
from mtl.data.entire_space import load_entire_space
from mtl.data.movielens import load_movielens_100k
from mtl.data.synthetic import load_synthetic

DATASETS = {
  'ali_ccp': load_ali_ccp,
  'aliexpress': load_aliexpress,
  'census_income': load_census_income,
  'entire_space': load_entire_space,
  'movielens_100k': load_movielens_100k,
  'synthetic': load_synthetic,
}
