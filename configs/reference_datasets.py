"""What the reference data-set configs (vangogh2photo, monet2photo, cezanne2photo,
ukiyoe2photo, horse2zebra) share: reference defaults at 256², data from a local copy.

The data is the reference release, a zip holding trainA/trainB/testA/testB of 256² jpgs; pass
it (or the extracted folder) with --config.data.path. Nothing is downloaded for you. With
--config.data.source=tfds --config.data.name=cycle_gan/<name> prepared TFDS data is read
instead (TPU pods with TFDS_DATA_DIR on a bucket).

Schedule: 100 + 100 epochs of max(|A|, |B|) steps at batch 1, as the paper. Runtime: a GPU/TPU
job. On 2 CPU cores one resnet_9blocks step at 256² takes seconds (measure yours with
`python -m cyclegan_jax.benchmarks.step --size=256`), which is months for the full schedule.
Expected result: translations like the paper's figures for that data set.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.source = 'folders'
  return config
