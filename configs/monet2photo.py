"""monet2photo: Monet paintings (A, 1,072 training images) ↔ photos (B, 6,287):
an epoch is 6,287 steps.

    python -m cyclegan_jax.main --config=configs/monet2photo.py --workdir=workdirs/monet2photo \
        --config.data.path=/path/to/monet2photo.zip

Data, schedule, runtime and expected result: see configs/reference_datasets.py.
"""

from configs import reference_datasets


def get_config():
  return reference_datasets.get_config()
