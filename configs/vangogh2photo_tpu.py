"""vangogh2photo on a TPU pod slice with 16 chips (v4-32 or v5e-16), reading TFDS data.

    launch/tpu_run.sh   # WORKDIR=gs://... TFDS_DATA_DIR=gs://... (see launch/README.md)

What changes from the reference (configs/vangogh2photo.py), and why:
- Global batch 16: one image per chip, as the reference's batch 1 per GPU. Instance norm is
  per image, so per-image statistics are unchanged; only the gradient averages 16 images.
- lr scaled by the square-root rule for Adam: lr = 2e-4 × sqrt(global batch / 1) = 8e-4 for
  both G and D. For another slice, set batch_size = chips and lr = 2e-4 × sqrt(batch_size).
- bfloat16 compute (the MXU's native input); parameters and optimizer state stay float32.
- The schedule stays in epochs (100 + 100 of max(|A|, |B|) = 6,287 images): 393 steps each.
- Checkpoints every 500 steps, so a preempted (spot) slice loses little: run the same
  command again and every worker resumes from the latest checkpoint.
"""

from configs import reference_datasets

CHIPS = 16  # v4-32 (16 chips; JAX sees one device per chip) or v5e-16.
REFERENCE_LR, REFERENCE_BATCH = 2e-4, 1


def get_config():
  config = reference_datasets.get_config()
  config.batch_size = CHIPS
  config.optim.lr = REFERENCE_LR * (config.batch_size / REFERENCE_BATCH) ** 0.5
  config.model.dtype = 'bfloat16'
  config.checkpoint_every_steps = 500
  config.data.source = 'tfds'
  config.data.name = 'cycle_gan/vangogh2photo'
  config.data.num_workers = 16  # TPU VM hosts have many cores for decoding.
  return config
