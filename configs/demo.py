"""The offline demo: bundled photographs → crops of Van Gogh's *The Starry Night*, at 64×64.

    ./launch/demo.sh
    python -m cyclegan_jax.main --config=configs/demo.py --workdir=workdirs/demo  # the same
    python -m cyclegan_jax.main --config=configs/demo.py:cyclegan --workdir=workdirs/demo_cyclegan

One-painting style transfer on data that ships inside installed packages (scikit-image,
scikit-learn, matplotlib; the painting is in cyclegan_jax/assets), so it needs no download.
A small ResNet generator (6 blocks, ngf 32) and PatchGAN (ndf 32) at 64², two epochs of
data.demo_size steps (the second decays the lr to 0): 1,600 steps for CUT, whose step is
slower here, so that the demo stays within 10 minutes on 2 cores; 1,800 for CycleGAN.

The default method is CUT (configs/cut.py settings): at equal training time on this data it
scored the best KID of the four methods in the README's table, and its antialiased generator
leaves no checkerboard. `:cyclegan` is the reference CycleGAN on the same data, both ways.
"""

from configs import cut, default

METHODS = ('cut', 'cyclegan')


def get_config(method: str = 'cut'):
  if method not in METHODS:
    raise ValueError(f'demo method {method!r}: expected one of {", ".join(METHODS)}.')
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
  if method == 'cut':
    cut.cut_settings(config)
    config.optim.n_epochs, config.optim.n_epochs_decay = 1, 1
    config.data.demo_size = 800
  return config
