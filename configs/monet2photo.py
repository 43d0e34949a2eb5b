"""monet2photo: Monet paintings (A, 1,072 training images) ↔ photos (B, 6,287), the reference data set, at 256².

    python -m cyclegan_jax.main --config=configs/monet2photo.py --workdir=workdirs/monet2photo \
        --config.data.path=/path/to/monet2photo.zip    # or the extracted folder

The zip is the reference release (trainA/trainB/testA/testB of 256² jpgs); it is not downloaded
for you. With data.source='tfds' and data.name='cycle_gan/monet2photo' it reads prepared TFDS data.
Reference schedule: 100 + 100 epochs of max(|A|, |B|) = 6,287 steps at batch 1. Runtime: this is a
GPU/TPU job; on 2 CPU cores one resnet_9blocks step at 256² takes seconds (see
`python -m cyclegan_jax.benchmark --size=256`), i.e. months for the full schedule. Expected
result: translations in the style of the paper's monet2photo figures.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.source = 'folders'
  return config
