"""vangogh2photo on a TPU pod slice with 16 chips (v4-32 or v5e-16), reading TFDS data.

    launch/tpu_run.sh   # WORKDIR=gs://... TFDS_DATA_DIR=gs://... (see launch/README.md)

What changes from the reference (configs/vangogh2photo.py), and why:
- Global batch 16: one image per chip, as the reference's batch 1 per GPU. Instance norm is
  per image, so per-image statistics are unchanged; only the gradient averages 16 images.
- lr stays the reference 2e-4 (Adam, β = (0.5, 0.999)) for G and D. The square-root rule for
  Adam (Malladi et al. 2022) scales lr by √16 only together with 1 − β by 16, and β₁ = 0.5 has
  no such value (1 − 16 × 0.5 < 0), so 2e-4 × √16 = 8e-4 would be a guess. On the CPU demo
  (configs/demo.py:cyclegan, batch 16 on 16 simulated devices, 40 steps) 8e-4 made D's and G's
  losses jump (D 3.3, G 3.1 in the first 10 steps; 2e-4: D 1.4, G 1.8, falling steadily) and
  was no better by step 40 (cycle loss 5.97 against 5.55). Untested on a pod: a batch-16 step
  moves the weights about as far as a batch-1 step, with 16× fewer steps per epoch, so the
  reference's 100 + 100 epochs may leave it short; add epochs before raising the lr.
- bfloat16 compute (the MXU's native input); parameters and optimizer state stay float32.
- The schedule stays in epochs (100 + 100 of max(|A|, |B|) = 6,287 images): 6,287 // 16 =
  392 steps each (the last, partial batch of an epoch is not a step).
- Checkpoints every 500 steps, so a preempted (Spot) slice loses little: launch/tpu_resume.sh
  recreates it and every worker resumes from the latest checkpoint in the gs:// workdir.
"""

from configs import reference_datasets

CHIPS = 16  # v4-32 (16 chips; JAX sees one device per chip) or v5e-16.


def get_config():
  config = reference_datasets.get_config()
  config.batch_size = CHIPS
  config.optim.lr = 2e-4  # The reference's, unscaled (see above).
  config.model.dtype = 'bfloat16'
  config.checkpoint_every_steps = 500
  config.data.source = 'tfds'
  config.data.name = 'cycle_gan/vangogh2photo'
  config.data.num_workers = 16  # TPU VM hosts have many cores for decoding.
  return config
