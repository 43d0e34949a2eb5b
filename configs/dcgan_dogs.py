"""Seed S4: DCGAN on dog photos at 64×64, streamed from disk (never held in memory).

    python -m cyclegan_jax.main --config=configs/dcgan_dogs.py --workdir=workdirs/dcgan_dogs \
        --config.data.path=DIR    # DIR holds dogs/ (any images; subfolders are not read)

or from a prepared tfds `stanford_dogs` (no download at run time):
        --config.data.source=tfds --config.data.name=stanford_dogs \
        --config.data.dir_a=train --config.data.dir_b=train --config.data.path=TFDS_DATA_DIR

Images are resized to 72 on the short side and randomly cropped to 64 (load_size), as the
pipeline does for CycleGAN; domain B is the same folder and goes unused. The reference DCGAN
(nz 100, ngf = ndf = 64, batch norm, Adam 2e-4 β₁ 0.5) with the vanilla loss on logits, so
the seed's `D_loss 100 / G_loss 0` clamp cannot appear; the divergence guard rolls back to the
last checkpoint with a halved lr if D wins outright.
"""

from configs import dcgan_reference


def get_config():
  config = dcgan_reference.get_config()
  config.num_train_steps = -1  # n_epochs epochs of |dogs| / 128 steps.
  config.log_every_steps = 100
  config.sample_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.optim.lr = 2e-4
  config.optim.lr_d = 2e-4
  # Seed S4's tuned pair, for comparison: G 1e-6, D 1e-4.
  # config.optim.lr, config.optim.lr_d = 1e-6, 1e-4
  config.optim.n_epochs = 100  # S4 saw recognisable dogs after about 100 epochs.
  config.optim.n_epochs_decay = 0
  config.data.source = 'folders'
  config.data.dir_a = 'dogs'
  config.data.dir_b = 'dogs'
  config.data.test_dir_a = 'dogs'
  config.data.test_dir_b = 'dogs'
  config.data.load_size = 72
  config.data.crop_size = 64
  config.data.preprocess = 'resize_and_crop'
  config.divergence.action = 'rollback'
  return config
