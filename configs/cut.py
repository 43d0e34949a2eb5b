"""CUT (Park et al. 2020) with the reference's options: photo ↔ painting folders as in
configs/default.py, A → B only.

    python -m cyclegan_jax.main --config=configs/cut.py --workdir=workdirs/cut \
        --config.data.source=folders --config.data.path=/path/to/horse2zebra.zip

`cut_settings` turns any config into CUT (or FastCUT) and is what configs/fastcut.py,
configs/cut_test.py and configs/methods_demo.py build on. From the reference's options
(CUT_mode, base_options, train_options): xavier init with gain 0.02; antialiased G and D;
LSGAN, no image pool; λ_GAN 1, λ_NCE 1 with the NCE identity term; NCE layers 0,4,8,12,16;
256 patches; τ 0.07; F a 256-unit MLP; 200 + 200 epochs; Adam 2e-4, β (0.5, 0.999); the same
data settings as CycleGAN. FastCUT: λ_NCE 10, no identity, flip-equivariance, 150 + 50 epochs.
"""

import ml_collections

from configs import default


def cut_overrides(fast: bool = False) -> dict:
  """What CUT (or FastCUT) changes in configs/default.py, as nested settings."""
  return {
      'family': 'cut',
      'model': {'init_type': 'xavier', 'init_gain': 0.02, 'antialias': True, 'antialias_d': True,
                'dropout': 0.0},
      # The CycleGAN-only settings, off (the CUT family refuses them otherwise).
      'loss': {'gan_mode': 'lsgan', 'pool_size': 0, 'lambda_identity': 0.0, 'lambda_a': 0.0,
               'lambda_b': 0.0, 'lambda_semantic': 0.0, 'lambda_gan': 1.0,
               'lambda_nce': 10.0 if fast else 1.0, 'nce_idt': not fast,
               'flip_equivariance': fast},
      'optim': {'n_epochs': 150, 'n_epochs_decay': 50} if fast else {'n_epochs': 200,
                                                                      'n_epochs_decay': 200},
  }


def cut_settings(config: ml_collections.ConfigDict,
                 fast: bool = False) -> ml_collections.ConfigDict:
  """`config` (whatever its data and sizes) with the CUT or FastCUT model, losses and epochs."""
  config.update(cut_overrides(fast))
  return config


def get_config():
  return cut_settings(default.get_config())
