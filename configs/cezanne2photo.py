"""cezanne2photo: Cézanne paintings (A, 525 training images) ↔ photos (B, 6,287):
an epoch is 6,287 steps.

    python -m cyclegan_jax.main --config=configs/cezanne2photo.py --workdir=workdirs/cezanne2photo \
        --config.data.path=/path/to/cezanne2photo.zip

Data, schedule, runtime and expected result: see configs/reference_datasets.py.
"""

from configs import reference_datasets


def get_config():
  return reference_datasets.get_config()
