"""What the DCGAN configs (dcgan_mnist, dcgan_dogs, dcgan_test) share: the reference DCGAN
(Radford et al. 2016): z of 100 → transposed convs with batch norm → tanh, a conv
discriminator with batch norm and LeakyReLU 0.2, the vanilla loss on logits, Adam 2e-4 β₁ 0.5
at a constant lr, batch 128, ngf = ndf = 64. Images are domain A of the configured source.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.family = 'dcgan'
  config.batch_size = 128
  config.num_sample_images = 64
  config.model.generator = 'dcgan'
  config.model.discriminator = 'dcgan'
  config.model.norm = 'batch'
  config.model.ngf = 64
  config.model.ndf = 64
  config.model.nz = 100
  config.loss.gan_mode = 'vanilla'
  config.optim.lr_policy = 'constant'
  return config
