"""Click and conversion on AliExpress (MTReclib layout) through the generic
`table` dataset: this file is the whole description.

  mtl-train --config=configs/aliexpress.py:esmm --workdir=workdirs/aliex_esmm
  mtl-train --config=configs/aliexpress.py:aitm --workdir=workdirs/aliex_aitm

The argument picks the model (esmm, aitm, mmoe, ple, shared_bottom; default
esmm). Li et al., CIKM 2020 (Tianchi dataset 74690, research use), in
MTReclib's layout: a header `search_id, categorical_1..16, numerical_1..63,
click, conversion`; like MTReclib, search_id is not an input. The data has
train and test files only: validation is a seeded tenth of the train file
(`validation_fraction`, `split_seed`), stratified by (click, conversion) so
that a rare conversion lands on both sides, held out before any vocabulary
or moment is fitted. Tasks: click, and conversion on the clicked rows.

Variant 'sample' (default): torch-rechub's 100/20-row US sample in
$MTL_DATA_DIR/aliexpress-sample, checked against its sha256 sums: smoke
scale, it proves the path, not the model. For one country's full files add
--config.dataset.variant=full --config.dataset.manual_dir=<dir> and raise
the batch and epochs.
"""

from configs.ali_ccp import MODELS, funnel_config, funnel_features

__all__ = ['MODELS', 'get_config']

SOURCE = (
  'https://raw.githubusercontent.com/datawhalechina/torch-rechub/'
  '5a73b2eebc3a670dc64c54971cc06a78ddd55394/examples/ranking/data/'
  'aliexpress/'
)
VARIANTS = {
  'sample': {
    'manual_dir': '$MTL_DATA_DIR/aliexpress-sample',
    'path': 'aliexpress_train_sample.csv',
    'test_path': 'aliexpress_test_sample.csv',
    'sha256': {
      'path': (
        '9a602d2bd6012b23898437f60977135b65e75c3414bf19cac0d70408b12035ef'
      ),
      'test_path': (
        'c264673dc08e68d1c6153b48c9039a3ea4d3ff3106b071550db34e311e25d529'
      ),
    },
    'source': f'download the torch-rechub samples from {SOURCE} (the full '
    "data is variant 'full')",
  },
  'full': {
    'manual_dir': '$MTL_DATA_DIR/aliexpress',
    'path': 'train.csv',
    'test_path': 'test.csv',
    'source': 'get Tianchi dataset 74690 (https://tianchi.aliyun.com/dataset/'
    "74690, research use) and put one country's train.csv and test.csv in "
    "MTReclib's layout (its AliExpress_<country>/ folders)",
  },
}


def get_config(model_name: str = 'esmm'):
  config = funnel_config('aliexpress', model_name)
  d = config.dataset
  d.split = 'files'  # no validation file: a stratified tenth of train
  d.stratify = ('click', 'conversion')
  d.variant = 'sample'
  d.variants = VARIANTS
  d.features = funnel_features(
    [f'categorical_{i}' for i in range(1, 17)],
    [f'numerical_{i}' for i in range(1, 64)],
  )
  d.tasks = {
    'click': {'label': 'click'},
    'conversion': {'label': 'conversion', 'where': 'click == 1'},
  }
  d.task_order = ('click', 'conversion')
  return config
