"""Click and conversion on AliExpress (MTReclib layout: 16 categorical, 63
numerical features).

  mtl-train --config=configs/aliexpress.py:esmm --workdir=workdirs/aliex_esmm
  mtl-train --config=configs/aliexpress.py:aitm --workdir=workdirs/aliex_aitm

The argument picks the model (esmm, aitm, mmoe, ple, shared_bottom; default
esmm). The data is $MTL_DATA_DIR/aliexpress-sample (100 train rows,
20 test; validation a seeded tenth of train): smoke
scale, it proves the path, not the model. For the full AliExpress files add
--config.dataset.variant=full --config.dataset.manual_dir=<dir> and raise
the batch and epochs. Sizes follow the ESMM paper at a small scale
(embeddings 8; the paper: 18, networks 360-200-80).
"""

from configs.ali_ccp import MODELS, funnel_config

__all__ = ['MODELS', 'get_config']


def get_config(model_name: str = 'esmm'):
  return funnel_config('aliexpress', model_name)
