"""Model families (config.family): each one file that fills in `base.Family`.

`get(config)` is the one place that maps a config to its family; `check_config` checks a whole
config once, before any work, and names every bad key it finds in one message.
"""

import ml_collections

from cyclegan_jax import optim, parallel
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.families import base, cut, cyclegan, dcgan

FAMILIES = {'cyclegan': cyclegan.FAMILY, 'cut': cut.FAMILY, 'dcgan': dcgan.FAMILY}


def get(config: ml_collections.ConfigDict) -> base.Family:
  if config.family not in FAMILIES:
    raise ValueError(f'config.family={config.family!r}; expected one of {", ".join(FAMILIES)}.')
  return FAMILIES[config.family]


def _check_digit_evals(config: ml_collections.ConfigDict) -> None:
  """Digit metrics during training score translations or samples with the MNIST classifier."""
  if config.eval_every_steps < 0 or (config.eval_every_steps and
                                     config.data.source != 'digits'):
    raise ValueError(f'eval_every_steps={config.eval_every_steps} scores digits during training: '
                     f'it needs data.source digits (not {config.data.source!r}), or 0 for off.')


def _check_eval(config: ml_collections.ConfigDict) -> None:
  """--mode=evaluate's image counts: FID and KID need two images or more per set."""
  bad = [f'eval.{key}={config.eval[key]}' for key in ('num_images', 'fid_samples')
         if config.eval[key] != -1 and config.eval[key] < 2]
  if bad:
    raise ValueError(f'{" and ".join(bad)}: expected -1 (all) or 2 or more images.')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises one ValueError naming every problem found in the data, optimizer, batch and family
  settings (the family's models are built to check theirs)."""
  family = get(config)
  problems = []
  for check in (input_pipeline.check_config, lambda c: optim.check_config(c.optim),
                lambda c: parallel.per_device_batch_size(c.batch_size), _check_digit_evals,
                _check_eval, family.check_config):
    try:
      check(config)
    except ValueError as e:
      problems.append(str(e))
  if problems:
    raise ValueError('\n'.join(problems) if len(problems) == 1 else
                     f'{len(problems)} problems in the config:\n  ' + '\n  '.join(problems))
