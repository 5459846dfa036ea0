"""Click and purchase on Ali-CCP (the ESMM dataset), torch-rechub's layout,
through the generic `table` dataset: this file is the whole description.

  mtl-train --config=configs/ali_ccp.py:esmm --workdir=workdirs/aliccp_esmm
  mtl-train --config=configs/ali_ccp.py:aitm --workdir=workdirs/aliccp_aitm

The argument picks the model (esmm, aitm, mmoe, ple, shared_bottom; default
esmm). Ma et al., SIGIR 2018 (Tianchi dataset 408, research use), as
preprocessed by torch-rechub after the AITM script: a header `click,
purchase`, 23 label-encoded categorical fields `101 ... 150_14` and 8 dense
fields `D109_14 ... D853` (standardised with the training moments). The
files are train / validation / test. Tasks: click on every impression and
purchase on the clicked ones (the CVR sample space; esmm and aitm add the
entire-space ctcvr task themselves).

Variant 'sample' (default): torch-rechub's 100/50/50-row sample in
$MTL_DATA_DIR/ali-ccp-sample, checked against its sha256 sums: smoke scale,
it proves the path, not the model. For the full files add
--config.dataset.variant=full --config.dataset.manual_dir=<dir> and raise
the batch and epochs. Sizes follow the ESMM paper at a small scale
(embeddings 8; the paper: 18, networks 360-200-80).
"""

from configs import common

MODELS = {
  'esmm': dict(hidden=(64, 32)),
  'aitm': dict(hidden=(64, 32)),
  'mmoe': dict(num_experts=4, expert_hidden=(32,)),
  'ple': dict(
    num_levels=2,
    num_specific_experts=2,
    num_shared_experts=2,
    expert_hidden=(32,),
  ),
  'shared_bottom': dict(hidden=(64, 32)),
}
SPARSE = tuple(
  '101 121 122 124 125 126 127 128 129 205 206 207 210 216 508 509 702 853 '
  '301 109_14 110_14 127_14 150_14'.split()
)
DENSE = tuple('D109_14 D110_14 D127_14 D150_14 D508 D509 D702 D853'.split())
SOURCE = (
  'https://raw.githubusercontent.com/datawhalechina/torch-rechub/'
  '5a73b2eebc3a670dc64c54971cc06a78ddd55394/examples/ranking/data/ali-ccp/'
)
VARIANTS = {
  'sample': {
    'manual_dir': '$MTL_DATA_DIR/ali-ccp-sample',
    'path': 'ali_ccp_train_sample.csv',
    'validation_path': 'ali_ccp_val_sample.csv',
    'test_path': 'ali_ccp_test_sample.csv',
    'sha256': {
      'path': (
        '1c1d125bcdfca70c8f5ed24f6221acadab3e19b70e0b06b3eb3adb2af7a0f9b5'
      ),
      'validation_path': (
        '1236e1504b76bf7ceb48dbe3d999ae8b49f61fcda2d684578320fd9fc7821104'
      ),
      'test_path': (
        '9764a9b8e53b25f85c00e08a89f65ecfadab100cb0834161bd7ef671b7702a09'
      ),
    },
    'source': f'download the torch-rechub samples from {SOURCE} (the full '
    "data is variant 'full')",
  },
  'full': {
    'manual_dir': '$MTL_DATA_DIR/ali-ccp',
    'path': 'ali_ccp_train.csv',
    'validation_path': 'ali_ccp_val.csv',
    'test_path': 'ali_ccp_test.csv',
    'source': 'get Tianchi dataset 408 (https://tianchi.aliyun.com/dataset/'
    "408, Alibaba's research-use terms) preprocessed into torch-rechub's "
    'CSV layout (torch-rechub examples/ranking/data/ali-ccp)',
  },
}


def get_config(model_name: str = 'esmm'):
  config = funnel_config('ali_ccp', model_name)
  d = config.dataset
  d.split = 'files'
  d.variant = 'sample'
  d.variants = VARIANTS
  d.features = funnel_features(SPARSE, DENSE)
  d.tasks = {
    'click': {'label': 'click'},
    'purchase': {'label': 'purchase', 'where': 'click == 1'},
  }
  d.task_order = ('click', 'purchase')
  return config


def funnel_features(sparse, dense) -> dict:
  """Categorical `sparse` and standardised `dense` columns."""
  features = {n: {'kind': 'categorical'} for n in sparse}
  return features | {n: {'kind': 'dense'} for n in dense}


def funnel_config(name: str, model_name: str):
  """A smoke-scale click/conversion config (also configs/aliexpress.py)."""
  if model_name not in MODELS:
    raise ValueError(
      f'configs/{name}.py: model {model_name!r} is not one of {sorted(MODELS)}'
    )
  config = common.base_config(model_name, 'table')
  config.dataset.name = name
  config.model.update(MODELS[model_name])
  config.towers.hidden = (16,)
  config.batch_size = 32
  config.num_epochs = 3
  config.steps_per_dispatch = 4
  config.eval_batch_size = 64
  config.log_every_steps = 4
  config.diagnostics_every_steps = 0
  return config
