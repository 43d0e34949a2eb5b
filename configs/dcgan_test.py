"""Tiny DCGAN for tests and CI: 32×32 demo images (domain A), ngf = ndf = 8, nz 16.

    python -m cyclegan_jax.main --config=configs/dcgan_test.py --workdir=/tmp/dcgan_test
"""

from configs import dcgan_reference


def get_config():
  config = dcgan_reference.get_config()
  config.batch_size = 8
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  config.sample_every_steps = 3
  config.num_sample_images = 4
  config.model.ngf = 8
  config.model.ndf = 8
  config.model.nz = 16
  config.data.source = 'demo'
  config.data.load_size = 36
  config.data.crop_size = 32
  config.data.demo_size = 64
  return config
