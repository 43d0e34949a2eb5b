"""DCGAN: unconditional generation on the same machinery; its models, state, pure per-device
step, samples and scores.

The state is the same `TrainState` with two trees ('g', 'd') and no image pools, so `parallel`,
`checkpointing` and the train loop serve both families unchanged.

Under pmap the step is that of one device with the global batch, as the reference on one GPU:
batch norm normalises with the statistics of the global batch (`parallel.in_step`), and z and
the penalty's mixes are drawn for the global batch, each device taking its rows. So a run does
not depend on how many devices or hosts share its batch.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cyclegan_jax import losses, optim, parallel, visualize
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.families import base
from cyclegan_jax.families.base import Models, TrainState
from cyclegan_jax.metrics import digits, fid
from cyclegan_jax.models import convolution, discriminators, generators
from cyclegan_jax.parallel import AXIS_NAME

SAMPLE_STREAM = 1  # fold_in tag of the fixed z behind every sample grid.


def create_models(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  lr_scale: float = 1.0, training_losses: bool = True) -> Models:
  """G ('dcgan' generator by default) → data.crop_size² images; D judges them."""
  del training_losses  # Its losses read no networks of their own.
  return Models(generators={'g': generators.create_generator(config.model)},
                discriminator=discriminators.create_discriminator(config.model),
                **optim.create_optimizers(config, steps_per_epoch, lr_scale))


def check_config(config: ml_collections.ConfigDict) -> None:
  loss = config.loss
  if loss.r1_gamma < 0 or loss.r1_every < 1:
    raise ValueError(f'loss.r1_gamma={loss.r1_gamma} must be >= 0 and loss.r1_every='
                     f'{loss.r1_every} >= 1.')
  if config.model.get('style_reference', False):
    raise ValueError('model.style_reference is a CycleGAN option: a DCGAN G reads noise.')
  generators.create_generator(config.model)
  discriminators.create_discriminator(config.model)


def create_train_state(config: ml_collections.ConfigDict, models: Models,
                       key: jax.Array) -> TrainState:
  """Fresh G and D, their Adam states, step 0; `pools` stays empty."""
  size, model = config.data.crop_size, config.model
  init_key, step_key = jax.random.split(key)

  @jax.jit
  def init(init_key):
    g_key, d_key = jax.random.split(base.init_key(init_key))
    g_vars = models.generators['g'].init(g_key, jnp.zeros((1, model.nz)), train=False)
    d_vars = models.discriminator.init(d_key, jnp.zeros((1, size, size, model.output_nc)),
                                       train=False)
    params = {'g': g_vars['params'], 'd': d_vars['params']}
    batch_stats = {'g': g_vars.get('batch_stats', {}), 'd': d_vars.get('batch_stats', {})}
    return (params, batch_stats, models.tx_g.init({'g': params['g']}),
            models.tx_d.init({'d': params['d']}))

  params, batch_stats, opt_state_g, opt_state_d = init(init_key)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state_g=opt_state_g, opt_state_d=opt_state_d, pools={}, rng=step_key)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, models: Models,
               config: ml_collections.ConfigDict) -> tuple[TrainState, dict[str, jax.Array]]:
  """One DCGAN update on this device's real images batch['a'] (the family's only domain).

  As the reference: G makes fakes from fresh z once; D is updated on real and (detached)
  fakes; then G is updated through the *updated* D on those same fakes (their vjp, so G runs
  forward once per step). D loss = loss(real as real) + loss(fake as fake) (+ gradient penalty),
  unhalved as in the DCGAN reference.
  """
  mode = config.loss.gan_mode
  real = batch['a']
  step_key = jax.random.fold_in(state.rng, state.step)  # The same on every device.
  z_key, gp_key = jax.random.split(step_key)
  z = parallel.share_of_global(lambda n: jax.random.normal(z_key, (n, config.model.nz)),
                               real.shape[0])
  modules = parallel.in_step({'g': models.generators['g'], 'd': models.discriminator})
  g_module, d_module = modules['g'], modules['d']

  fake, g_vjp, g_stats = jax.vjp(
      lambda g: base.apply_train(g_module, g, state.batch_stats['g'], z), state.params['g'],
      has_aux=True)

  def discriminator_loss(d_params):
    pred_real, stats = base.apply_train(d_module, d_params, state.batch_stats['d'], real)
    pred_fake, stats = base.apply_train(d_module, d_params, stats, jax.lax.stop_gradient(fake))
    terms = {'d_real_loss': losses.gan_loss(pred_real, True, mode),
             'd_fake_loss': losses.gan_loss(pred_fake, False, mode),
             'd_real': jnp.mean(pred_real), 'd_fake': jnp.mean(pred_fake)}
    total = terms['d_real_loss'] + terms['d_fake_loss']
    if mode == 'wgangp':
      terms['d_gp'] = losses.gradient_penalty(
          lambda x: base.apply_train(d_module, d_params, stats, x)[0],
          real, jax.lax.stop_gradient(fake),
          parallel.share_of_global(lambda n: jax.random.uniform(gp_key, (n,)), real.shape[0]),
          config.loss.lambda_gp)
      total += terms['d_gp']
    if config.loss.r1_gamma:
      every = config.loss.r1_every

      def penalty():
        with convolution.using(convolution.for_second_derivatives()):
          return losses.r1_penalty(
              lambda x: base.apply_train(d_module, d_params, state.batch_stats['d'], x)[0],
              real, config.loss.r1_gamma * every)

      terms['d_r1'] = jax.lax.cond(state.step % every == 0, penalty, lambda: jnp.zeros(()))
      total += terms['d_r1']
    return total, (terms, stats)

  (d_total, (d_terms, d_stats)), d_grads = jax.value_and_grad(
      discriminator_loss, has_aux=True)(state.params['d'])
  d_grads = jax.lax.pmean(d_grads, AXIS_NAME)
  d_params, opt_state_d = base.optimizer_update(models.tx_d, {'d': d_grads}, state.opt_state_d,
                                  {'d': state.params['d']})

  def generator_loss(fake):
    pred, stats = base.apply_train(d_module, d_params['d'], d_stats, fake)
    return losses.generator_gan_loss(pred, mode), stats

  (g_total, d_stats), fake_grads = jax.value_and_grad(generator_loss, has_aux=True)(fake)
  g_grads = jax.lax.pmean(g_vjp(fake_grads)[0], AXIS_NAME)
  g_params, opt_state_g = base.optimizer_update(models.tx_g, {'g': g_grads}, state.opt_state_g,
                                  {'g': state.params['g']})

  metrics = {**d_terms, 'd_total': d_total, 'g_total': g_total,
             'g_grad_norm': optax.tree.norm(g_grads), 'd_grad_norm': optax.tree.norm(d_grads),
             'lr_g': models.lr_g(state.step), 'lr_d': models.lr_d(state.step)}
  new_state = state.replace(
      step=state.step + 1, params={**g_params, **d_params},
      batch_stats={'g': g_stats, 'd': d_stats},
      opt_state_g=opt_state_g, opt_state_d=opt_state_d)
  return new_state, jax.lax.pmean(metrics, AXIS_NAME)


def sample_z(config: ml_collections.ConfigDict, num: int | None = None) -> jax.Array:
  """The fixed noise behind every sample grid and every scored sample: `num` vectors
  (num_sample_images by default) from the seed. z_i depends on i alone, so the first
  num_sample_images of a larger draw are the grid's."""
  key = jax.random.fold_in(jax.random.key(config.seed), SAMPLE_STREAM)
  num = config.num_sample_images if num is None else num
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (config.model.nz,)))(
      jnp.arange(num))


def generate_samples(config: ml_collections.ConfigDict, models: Models, params: dict[str, Any],
                     batch_stats: dict[str, Any], num: int) -> np.ndarray:
  """G(sample_z(config, num)) as [num, H, W, C] in [-1, 1], drawn in batches of
  num_sample_images (batch norm sees batches of the grid's size), so the first batch is the
  sample grid's images. Batch norm uses each batch's own statistics, as the DCGAN reference
  draws its samples (its G stays in train mode); nothing is updated."""
  batch = config.num_sample_images
  z = sample_z(config, -(-num // batch) * batch)
  g = models.generators['g']
  return np.concatenate([np.asarray(base.apply(g, params['g'], batch_stats['g'], z[i:i + batch],
                                               True))
                         for i in range(0, len(z), batch)])[:num]


def make_sampler(config: ml_collections.ConfigDict, models: Models,
                 data: input_pipeline.Data) -> base.Sampler:
  """A square-ish grid of G(z) for the same z at every step, so grids show progress."""
  del data  # Samples need no data.
  columns = math.ceil(math.sqrt(config.num_sample_images))

  def sample(params, batch_stats):
    images = generate_samples(config, models, params, batch_stats, config.num_sample_images)
    return visualize.image_grid([list(images[i:i + columns])
                                 for i in range(0, len(images), columns)])

  return sample


def digit_metrics(config: ml_collections.ConfigDict, models: Models, data: input_pipeline.Data,
                  params: dict[str, Any], batch_stats: dict[str, Any]) -> dict[str, float]:
  """How clear and varied num_digit_eval_images samples are (their first batch: the grid)."""
  del data
  return digits.sample_scores(config, generate_samples(
      config, models, params, batch_stats, config.num_digit_eval_images))


def evaluate(config: ml_collections.ConfigDict, models: Models, data: input_pipeline.Data,
             params: dict[str, Any], batch_stats: dict[str, Any],
             scorer: fid.Scorer) -> tuple[dict[str, int], dict[str, float]]:
  """fid, kid, kid_std of as many samples as test images of A, against them; on digits also
  digit_confident and digit_score, over all samples and over the first num_sample_images
  (`_grid`: the images of the sample grid). Without digit scores, only the samples that FID/KID
  see (eval.fid_samples) are drawn."""
  real = data.eval_images('a', config.eval.num_images)
  digit_scores = config.data.source == 'digits'
  samples = generate_samples(
      config, models, params, batch_stats,
      len(real) if digit_scores else fid.sample_size(len(real), config.eval.fid_samples))
  metrics = base.fid_and_kid(scorer, samples, real, 'a', '')
  if digit_scores:
    metrics.update(digits.sample_scores(config, samples))
    grid = digits.sample_scores(config, samples[:config.num_sample_images])
    metrics.update({f'{k}_grid': v for k, v in grid.items()})
  return {'a': len(real)}, metrics


FAMILY = base.Family(
    check_config=check_config, create_models=create_models,
    create_train_state=create_train_state, train_step=train_step, domains='a',
    make_sampler=make_sampler, digit_metrics=digit_metrics, evaluate=evaluate, translators={},
    latent_generator=base.LatentGenerator('g', train_mode=True),
    loss_groups={'losses': ['g_total', 'd_total', 'd_real_loss', 'd_fake_loss', 'd_gp', 'd_r1'],
                 'discriminator logits': ['d_real', 'd_fake']},
    log_columns=lambda s: {'Loss_D': s['d_total'], 'Loss_G': s['g_total'],
                           'D_real': s['d_real'], 'D_fake': s['d_fake']})
