"""The offline demo: bundled photographs ↔ crops of Van Gogh's *The Starry Night*, at 64×64.

    ./launch/demo.sh      # or: python -m cyclegan_jax.main --config=configs/demo.py --workdir=workdirs/demo

One-painting style transfer on data that ships inside installed packages (scikit-image,
scikit-learn, matplotlib; the painting is in cyclegan_jax/assets), so it needs no download.
A small ResNet generator (6 blocks, ngf 32) and PatchGAN (ndf 32) at 64², 1,800 steps.
Measured on 2 CPU cores: 8 min 22 s wall (about 4 steps/s). Photos visibly take on the
painting's blues, yellows and brush texture by step 600. Sample grids land in
workdirs/demo/samples/, TensorBoard logs in workdirs/demo.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.batch_size = 1
  config.log_every_steps = 50
  config.checkpoint_every_steps = 200
  config.sample_every_steps = 200
  config.num_sample_images = 4
  config.model.generator = 'resnet_6blocks'
  config.model.ngf = 32
  config.model.ndf = 32
  config.optim.n_epochs = 1  # An epoch is data.demo_size steps at batch 1.
  config.optim.n_epochs_decay = 1
  config.data.source = 'demo'
  config.data.demo_size = 900
  config.data.load_size = 72
  config.data.crop_size = 64
  return config
