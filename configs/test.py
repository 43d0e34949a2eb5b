"""Tiny CycleGAN for tests and CI: 32×32 demo images, ngf = ndf = 8, two residual blocks.

    python -m cyclegan_jax.main --config=configs/test.py --workdir=/tmp/cg_test

About 10 s to compile and ~20 ms per step on 2 CPU cores; it learns nothing worth looking at.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.batch_size = 8
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  config.sample_every_steps = 3
  config.num_sample_images = 2
  config.model.generator = 'resnet_2blocks'
  # Unrolled: benchmarks.step's executed-FLOP count (XLA counts a loop body once) and the
  # tests written against it assume straight-line blocks.
  config.model.unroll_blocks = True
  config.model.ngf = 8
  config.model.ndf = 8
  config.loss.pool_size = 10
  config.optim.n_epochs = 1
  config.optim.n_epochs_decay = 1
  config.data.source = 'demo'
  config.data.load_size = 36
  config.data.crop_size = 32
  config.data.demo_size = 64
  return config
