"""Tiny CUT for tests and CI: configs/test.py's data and sizes (32×32 demo images, ngf = ndf =
8, two residual blocks), CUT's model and losses, 64 patches and a 32-unit F.

    python -m cyclegan_jax.main --config=configs/cut_test.py --workdir=/tmp/cut_test
"""

from configs import cut, test


def get_config():
  config = cut.cut_settings(test.get_config())
  config.model.nce_layers = '0,4,8,12'  # resnet_2blocks: entry 12 is its first block.
  config.model.projection_features = 32
  config.loss.num_patches = 64
  return config
