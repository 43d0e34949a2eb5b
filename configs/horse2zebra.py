"""horse2zebra: horses (A, 1,067 training images) ↔ zebras (B, 1,334): an epoch is 1,334 steps.

    python -m cyclegan_jax.main --config=configs/horse2zebra.py --workdir=workdirs/horse2zebra \
        --config.data.path=/path/to/horse2zebra.zip

Data, schedule, runtime and expected result: see configs/reference_datasets.py.
"""

from configs import reference_datasets


def get_config():
  return reference_datasets.get_config()
