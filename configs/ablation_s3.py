"""Seed S3's ablation: original, LeakyReLU 0.01, semantic (VGG16) cycle loss, and both.

    python -m cyclegan_jax.main --mode=ablation --config=configs/ablation_s3.py \
        --workdir=workdirs/ablation_s3 --config.data.path=/path/to/vangogh2photo.zip
    python -m cyclegan_jax.main --mode=ablation --config=configs/ablation_s3.py:demo \
        --workdir=workdirs/ablation_demo      # the offline demo data, tiny

S3 trained on vangogh2photo and reported FID for photo → Van Gogh (B → A there; A → B in the
demo, whose A is photos). It did not publish its semantic-loss weight or VGG layers: the
weight here (1.0) and layers (config.loss.semantic_layers) are our choice. Every variant uses
the same seed, steps and data; evaluation scores the test split (the demo's held-out crops).
"""

import ml_collections

from configs import demo, vangogh2photo

LEAKY = {'activation': 'leaky_relu', 'leaky_slope': 0.01}  # S3's LeakyReLU.
SEMANTIC = {'lambda_semantic': 1.0}
# FID that S3 reported for photo -> Van Gogh after its own full training, for reference only.
S3_REPORTED_FID = {'original': 199.29, 'leaky_relu': 201.94, 'semantic': 192.47,
                   'hybrid': 189.71}


def get_config(base: str = 'vangogh2photo'):
  if base not in ('vangogh2photo', 'demo'):
    raise ValueError(f'ablation_s3 base {base!r}: expected vangogh2photo or demo.')
  if base == 'demo':
    config = demo.get_config('cyclegan')
    config.num_train_steps = 200
    config.checkpoint_every_steps = 200
    config.sample_every_steps = 200
    config.eval.num_images = 40
  else:
    config = vangogh2photo.get_config()
  config.ablation = ml_collections.ConfigDict()
  config.ablation.variants = ml_collections.ConfigDict({
      'original': {}, 'leaky_relu': {'model': LEAKY}, 'semantic': {'loss': SEMANTIC},
      'hybrid': {'model': LEAKY, 'loss': SEMANTIC}})
  config.ablation.order = 'original,leaky_relu,semantic,hybrid'
  config.ablation.direction = 'a_to_b' if base == 'demo' else 'b_to_a'  # photo -> painting.
  config.ablation.table = 'ablation_s3.md'
  config.ablation.reported = ml_collections.ConfigDict(
      {k: f'{v:.2f}' for k, v in S3_REPORTED_FID.items()})
  config.ablation.reported_title = 'S3 reported FID (not this run)'
  return config
