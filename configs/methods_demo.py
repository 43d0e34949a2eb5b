"""CycleGAN, CycleGAN + antialiased sampling, CUT and FastCUT on the offline demo data, each
trained for the same wall time, then scored: the README's method table, in one command.

    python -m cyclegan_jax.main --mode=ablation --config=configs/methods_demo.py \
        --workdir=workdirs/methods_demo

KID of photo → painting translations (A → B) of the 200 held-out photo crops, against 200
held-out crops of the painting. Each method trains for max_train_minutes at a constant lr
(a schedule in steps cannot end at the same time for methods of different speeds), with the
demo's networks (ResNet 6 blocks, ngf 32, PatchGAN ndf 32, 64²).
"""

import ml_collections

from configs import cut, demo


def get_config():
  config = demo.get_config('cyclegan')
  config.num_train_steps = 1_000_000  # The time limit ends each run.
  config.max_train_minutes = 8.0
  config.optim.lr_policy = 'constant'
  config.checkpoint_every_steps = 500
  config.sample_every_steps = 500
  config.eval.num_images = 200
  config.eval.kid_subset_size = 100
  config.ablation = ml_collections.ConfigDict()
  config.ablation.variants = ml_collections.ConfigDict({
      'cyclegan': {}, 'cyclegan_antialias': {'model': {'antialias': True}},
      'cut': cut.cut_overrides(), 'fastcut': cut.cut_overrides(fast=True)})
  config.ablation.order = 'cyclegan,cyclegan_antialias,cut,fastcut'
  config.ablation.descriptions = ml_collections.ConfigDict({
      'cyclegan': 'CycleGAN (`configs/demo.py:cyclegan`)',
      'cyclegan_antialias': 'CycleGAN, `model.antialias=True`',
      'cut': 'CUT (`configs/cut.py` settings)',
      'fastcut': 'FastCUT (`configs/fastcut.py` settings)'})
  config.ablation.direction = 'a_to_b'  # Photo → painting.
  config.ablation.table = 'methods_demo.md'
  return config
