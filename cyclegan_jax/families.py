"""The train loop's one model-family seam (config.family): what CycleGAN and DCGAN do
differently. Everything else (parallel, checkpointing, the loop, writers) is shared."""

from collections.abc import Callable
import dataclasses
import math
from typing import Any

import jax
import ml_collections
import numpy as np

from cyclegan_jax import dcgan_step, inference, input_pipeline, train_state, train_step, visualize
from cyclegan_jax.evaluate import digits, vgg

# (params, batch_stats) of one replica → a uint8 sample grid.
Sampler = Callable[[dict[str, Any], dict[str, Any]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Family:
  create_models: Callable[..., train_state.Models]  # (config, steps_per_epoch, lr_scale)
  create_train_state: Callable[..., train_state.TrainState]  # (config, models, key)
  train_step: Callable[..., Any]  # Per device: (state, batch, *, models, config).
  domains: str  # The training domains it reads: the batches hold only these ('ab' or 'a').
  make_sampler: Callable[[ml_collections.ConfigDict, train_state.Models], Sampler]
  # (config, models, params, batch_stats) of one replica → the digit metrics (source 'digits').
  digit_metrics: Callable[..., dict[str, float]]
  loss_groups: dict[str, list[str]]  # Panels of loss_curves.png.
  log_columns: Callable[[dict[str, float]], dict[str, float]]  # The log line, loss_table.csv.


def _cyclegan_train_step(state, batch, *, models, config):
  """CycleGAN's step, with the VGG16 semantic cycle loss when config.loss.lambda_semantic > 0."""
  return train_step.train_step(state, batch, models=models, config=config,
                               semantic_loss=vgg.make_semantic_loss(config.loss))


def _cyclegan_sampler(config: ml_collections.ConfigDict, models: train_state.Models) -> Sampler:
  """Rows of real | translated | reconstructed for fixed test images of both domains."""
  cycle_fn = inference.make_cycle_fn(models)
  images = [input_pipeline.load_eval_images(config, d, config.num_sample_images) for d in 'ab']
  return lambda params, batch_stats: visualize.cycle_grid(
      **jax.device_get(cycle_fn(params, batch_stats, *images)))


def _dcgan_sampler(config: ml_collections.ConfigDict, models: train_state.Models) -> Sampler:
  """A square-ish grid of G(z) for the same z at every step, so grids show progress."""
  columns = math.ceil(math.sqrt(config.num_sample_images))

  def sample(params, batch_stats):
    images = dcgan_step.generate_samples(config, models, params, batch_stats,
                                         config.num_sample_images)
    return visualize.image_grid([list(images[i:i + columns])
                                 for i in range(0, len(images), columns)])

  return sample


def _cyclegan_digit_metrics(config, models, params, batch_stats) -> dict[str, float]:
  """How well G_BA (or G_AB) keeps the digit of num_digit_eval_images test images."""
  return digits.translation_accuracy(config, models, params, batch_stats,
                                     config.num_digit_eval_images)


def _dcgan_digit_metrics(config, models, params, batch_stats) -> dict[str, float]:
  """How clear and varied num_digit_eval_images samples are (their first batch: the grid)."""
  return digits.sample_scores(config, dcgan_step.generate_samples(
      config, models, params, batch_stats, config.num_digit_eval_images))


FAMILIES = {
    'cyclegan': Family(
        create_models=train_state.create_models,
        create_train_state=train_state.create_train_state,
        train_step=_cyclegan_train_step, domains='ab', make_sampler=_cyclegan_sampler,
        digit_metrics=_cyclegan_digit_metrics,
        loss_groups={
            'generator': ['g_adv_a', 'g_adv_b', 'cycle_a', 'cycle_b', 'idt_a', 'idt_b',
                          'semantic'],
            'discriminator': ['d_a', 'd_b', 'd_a_gp', 'd_b_gp'],
            'totals': ['g_total', 'd_total']},
        log_columns=visualize.s0_losses),
    'dcgan': Family(
        create_models=dcgan_step.create_models,
        create_train_state=dcgan_step.create_train_state,
        train_step=dcgan_step.train_step, domains='a', make_sampler=_dcgan_sampler,
        digit_metrics=_dcgan_digit_metrics,
        loss_groups={'losses': ['g_total', 'd_total', 'd_real_loss', 'd_fake_loss', 'd_gp',
                                'd_r1'],
                     'discriminator logits': ['d_real', 'd_fake']},
        log_columns=lambda s: {'Loss_D': s['d_total'], 'Loss_G': s['g_total'],
                               'D_real': s['d_real'], 'D_fake': s['d_fake']}),
}


def get(config: ml_collections.ConfigDict) -> Family:
  if config.family not in FAMILIES:
    raise ValueError(f'config.family={config.family!r}; expected one of {", ".join(FAMILIES)}.')
  return FAMILIES[config.family]
