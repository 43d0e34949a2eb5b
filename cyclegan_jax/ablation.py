"""Seed S3's ablation: one command trains and evaluates its four variants, then writes a table.

    python -m cyclegan_jax.main --mode=ablation --config=configs/ablation_s3.py \
        --workdir=workdirs/ablation_s3 --config.data.path=/path/to/vangogh2photo.zip

Each variant trains in workdir/<variant> from the same config (same seed, steps and data) with
only the generator activation and the semantic loss changed; a finished variant is not
retrained (its checkpoint is at the last step). The table goes to workdir/ablation_s3.md.
"""

from pathlib import Path

import ml_collections
from absl import logging

from cyclegan_jax import evaluation, train

# Variant -> (generator activation, semantic cycle loss on), as in seed S3.
VARIANTS = {'original': ('relu', False), 'leaky_relu': ('leaky_relu', False),
            'semantic': ('relu', True), 'hybrid': ('leaky_relu', True)}
# FID that S3 reported for photo -> Van Gogh after its own full training, for reference only.
S3_REPORTED_FID = {'original': 199.29, 'leaky_relu': 201.94, 'semantic': 192.47,
                   'hybrid': 189.71}


def variant_config(config: ml_collections.ConfigDict, name: str,
                   workdir: Path) -> ml_collections.ConfigDict:
  """The base config with variant `name`'s activation and semantic weight; all variants share
  one cache of real-image Inception features."""
  activation, semantic = VARIANTS[name]
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.activation = activation
  config.model.leaky_slope = config.ablation.leaky_slope
  config.loss.lambda_semantic = config.ablation.lambda_semantic if semantic else 0.0
  config.eval.stats_dir = config.eval.stats_dir or str(workdir / 'stats')
  return config


def markdown_table(config: ml_collections.ConfigDict,
                   results: dict[str, dict[str, float]]) -> str:
  """S3's table (variant and FID of its direction), with KID and the other direction added."""
  main = config.ablation.direction
  other = 'b_to_a' if main == 'a_to_b' else 'a_to_b'
  arrow = lambda d: d.replace('_to_', '→').upper()
  lines = [f'| Variant | Activation | Semantic loss | FID {arrow(main)} | KID×10³ {arrow(main)} '
           f'| FID {arrow(other)} | KID×10³ {arrow(other)} | S3 reported FID (not this run) |',
           '|---|---|---|---|---|---|---|---|']
  for name, m in results.items():
    activation, semantic = VARIANTS[name]
    if activation == 'leaky_relu':
      activation = f'LeakyReLU {config.ablation.leaky_slope:g}'
    weight = f'λ={config.ablation.lambda_semantic:g}' if semantic else 'off'
    lines.append(f'| {name} | {activation} | {weight} | {m[f"fid_{main}"]:.2f} | '
                 f'{1e3 * m[f"kid_{main}"]:.2f} ± {1e3 * m[f"kid_{main}_std"]:.2f} | '
                 f'{m[f"fid_{other}"]:.2f} | {1e3 * m[f"kid_{other}"]:.2f} ± '
                 f'{1e3 * m[f"kid_{other}_std"]:.2f} | {S3_REPORTED_FID[name]} |')
  return '\n'.join(lines) + '\n'


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Trains and evaluates every variant in config.ablation.variants; returns the table."""
  if 'ablation' not in config:
    raise ValueError('--mode=ablation needs a config with an `ablation` section, e.g. '
                     'configs/ablation_s3.py.')
  names = [n.strip() for n in config.ablation.variants.split(',')]
  unknown = [n for n in names if n not in VARIANTS]
  if unknown or config.ablation.direction not in ('a_to_b', 'b_to_a'):
    raise ValueError(f'ablation.variants {unknown} / direction {config.ablation.direction!r}: '
                     f'expected variants from {", ".join(VARIANTS)} and a_to_b or b_to_a.')
  workdir = Path(workdir)
  results = {}
  for name in names:
    variant = variant_config(config, name, workdir)
    logging.info('ablation variant %s: training in %s', name, workdir / name)
    train.train_and_evaluate(variant, str(workdir / name))
    results[name] = evaluation.evaluate(variant, str(workdir / name))
  table = markdown_table(config, results)
  (workdir / 'ablation_s3.md').write_text(table)
  logging.info('ablation table (%s):\n%s', workdir / 'ablation_s3.md', table)
  return table
