"""Seed S3's ablation: original, LeakyReLU 0.01, semantic (VGG16) cycle loss, and both.

    python -m cyclegan_jax.main --mode=ablation --config=configs/ablation_s3.py \
        --workdir=workdirs/ablation_s3 --config.data.path=/path/to/vangogh2photo.zip
    python -m cyclegan_jax.main --mode=ablation --config=configs/ablation_s3.py:demo \
        --workdir=workdirs/ablation_demo      # the offline demo data, tiny

S3 trained on vangogh2photo and reported FID for photo → Van Gogh (B → A there; A → B in the
demo, whose A is photos). It did not publish its semantic-loss weight or VGG layers: the
weight here (1.0) and layers (config.loss.semantic_layers) are our choice. Every variant uses
the same seed, steps and data; evaluation scores the test split (the demo has none and uses
its first eval.num_images training items).
"""

import ml_collections

from configs import demo, vangogh2photo


def get_config(base: str = 'vangogh2photo'):
  if base not in ('vangogh2photo', 'demo'):
    raise ValueError(f'ablation_s3 base {base!r}: expected vangogh2photo or demo.')
  if base == 'demo':
    config = demo.get_config()
    config.num_train_steps = 200
    config.checkpoint_every_steps = 200
    config.sample_every_steps = 200
    config.eval.num_images = 40
  else:
    config = vangogh2photo.get_config()
  config.ablation = ml_collections.ConfigDict()
  config.ablation.variants = 'original,leaky_relu,semantic,hybrid'
  config.ablation.leaky_slope = 0.01  # S3's LeakyReLU slope.
  config.ablation.lambda_semantic = 1.0
  config.ablation.direction = 'a_to_b' if base == 'demo' else 'b_to_a'  # photo -> painting.
  return config
