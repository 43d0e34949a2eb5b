"""ukiyoe2photo: Ukiyo-e prints (A, 562 training images) ↔ photos (B, 6,287):
an epoch is 6,287 steps.

    python -m cyclegan_jax.main --config=configs/ukiyoe2photo.py --workdir=workdirs/ukiyoe2photo \
        --config.data.path=/path/to/ukiyoe2photo.zip

Data, schedule, runtime and expected result: see configs/reference_datasets.py.
"""

from configs import reference_datasets


def get_config():
  return reference_datasets.get_config()
