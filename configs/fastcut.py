"""FastCUT (Park et al. 2020): CUT without the identity term, with λ_NCE 10 and
flip-equivariance, for 150 + 50 epochs; lighter and faster than CUT (configs/cut.py).

    python -m cyclegan_jax.main --config=configs/fastcut.py --workdir=workdirs/fastcut \
        --config.data.source=folders --config.data.path=/path/to/horse2zebra.zip
"""

from configs import cut, default


def get_config():
  return cut.cut_settings(default.get_config(), fast=True)
