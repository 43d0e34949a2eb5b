"""DCGAN on the CycleGAN machinery: its models, state and pure per-device step.

The state is the same `TrainState` with two trees ('g', 'd') and no image pools, so `parallel`,
`checkpointing` and the train loop serve both families unchanged.

Batch norm under pmap: each device normalises with its own batch statistics (as the reference
does on one GPU, and as `layers.Norm` documents); the running averages are pmean'd at the end
of the step, so every replica keeps the same ones. A pmapped step over n devices is therefore
n independent per-device BN batches with one averaged gradient, not one big synced batch.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cyclegan_jax import convolution, discriminators, generators, losses
from cyclegan_jax.parallel import AXIS_NAME
from cyclegan_jax.train_state import Models, TrainState, create_optimizers, _init_key

SAMPLE_STREAM = 1  # fold_in tag of the fixed z behind every sample grid.


def create_models(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  lr_scale: float = 1.0) -> Models:
  """G ('dcgan' generator by default) → data.crop_size² images; D judges them."""
  loss = config.loss
  if loss.r1_gamma < 0 or loss.r1_every < 1:
    raise ValueError(f'loss.r1_gamma={loss.r1_gamma} must be >= 0 and loss.r1_every='
                     f'{loss.r1_every} >= 1.')
  return Models(generators={'g': generators.create_generator(config.model)},
                discriminator=discriminators.create_discriminator(config.model),
                **create_optimizers(config, steps_per_epoch, lr_scale))


def create_train_state(config: ml_collections.ConfigDict, models: Models,
                       key: jax.Array) -> TrainState:
  """Fresh G and D, their Adam states, step 0; `pools` stays empty."""
  size, model = config.data.crop_size, config.model
  init_key, step_key = jax.random.split(key)

  @jax.jit
  def init(init_key):
    g_key, d_key = jax.random.split(_init_key(init_key))
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


def _apply(module, params, batch_stats, x):
  """One training-mode forward; returns (output, updated batch statistics)."""
  variables = {'params': params, **({'batch_stats': batch_stats} if batch_stats else {})}
  y, mutated = module.apply(variables, x, train=True, mutable=['batch_stats'])
  return y, mutated.get('batch_stats', batch_stats)


def _update(tx: optax.GradientTransformation, grads, opt_state, params):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


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
  key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                           jax.lax.axis_index(AXIS_NAME))
  z_key, gp_key = jax.random.split(key)
  z = jax.random.normal(z_key, (real.shape[0], config.model.nz))
  g_module, d_module = models.generators['g'], models.discriminator

  fake, g_vjp, g_stats = jax.vjp(
      lambda g: _apply(g_module, g, state.batch_stats['g'], z), state.params['g'], has_aux=True)

  def discriminator_loss(d_params):
    pred_real, stats = _apply(d_module, d_params, state.batch_stats['d'], real)
    pred_fake, stats = _apply(d_module, d_params, stats, jax.lax.stop_gradient(fake))
    terms = {'d_real_loss': losses.gan_loss(pred_real, True, mode),
             'd_fake_loss': losses.gan_loss(pred_fake, False, mode),
             'd_real': jnp.mean(pred_real), 'd_fake': jnp.mean(pred_fake)}
    total = terms['d_real_loss'] + terms['d_fake_loss']
    if mode == 'wgangp':
      terms['d_gp'] = losses.gradient_penalty(
          lambda x: _apply(d_module, d_params, stats, x)[0],
          real, jax.lax.stop_gradient(fake), gp_key, config.loss.lambda_gp)
      total += terms['d_gp']
    if config.loss.r1_gamma:
      every = config.loss.r1_every
      r1_module = d_module.clone(
          conv_impl=convolution.for_second_derivatives(d_module.conv_impl))
      penalty = functools.partial(
          losses.r1_penalty, lambda x: _apply(r1_module, d_params, state.batch_stats['d'], x)[0],
          real, config.loss.r1_gamma * every)
      terms['d_r1'] = jax.lax.cond(state.step % every == 0, penalty, lambda: jnp.zeros(()))
      total += terms['d_r1']
    return total, (terms, stats)

  (d_total, (d_terms, d_stats)), d_grads = jax.value_and_grad(
      discriminator_loss, has_aux=True)(state.params['d'])
  d_grads = jax.lax.pmean(d_grads, AXIS_NAME)
  d_params, opt_state_d = _update(models.tx_d, {'d': d_grads}, state.opt_state_d,
                                  {'d': state.params['d']})

  def generator_loss(fake):
    pred, stats = _apply(d_module, d_params['d'], d_stats, fake)
    return losses.generator_gan_loss(pred, mode), stats

  (g_total, d_stats), fake_grads = jax.value_and_grad(generator_loss, has_aux=True)(fake)
  g_grads = jax.lax.pmean(g_vjp(fake_grads)[0], AXIS_NAME)
  g_params, opt_state_g = _update(models.tx_g, {'g': g_grads}, state.opt_state_g,
                                  {'g': state.params['g']})

  metrics = {**d_terms, 'd_total': d_total, 'g_total': g_total,
             'g_grad_norm': optax.tree.norm(g_grads), 'd_grad_norm': optax.tree.norm(d_grads),
             'lr_g': models.lr_g(state.step), 'lr_d': models.lr_d(state.step)}
  new_state = state.replace(
      step=state.step + 1, params={**g_params, **d_params},
      batch_stats=jax.lax.pmean({'g': g_stats, 'd': d_stats}, AXIS_NAME),
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


@functools.partial(jax.jit, static_argnums=0)
def _generate(generator, g_params: Any, g_batch_stats: Any, z: jax.Array) -> jax.Array:
  return _apply(generator, g_params, g_batch_stats, z)[0]


def generate(models: Models, params: dict[str, Any], batch_stats: dict[str, Any],
             z: jax.Array) -> jax.Array:
  """G(z), with batch norm on z's own batch statistics, as the DCGAN reference draws its samples
  (its G stays in train mode); nothing is updated. Compiled once per generator and z shape."""
  return _generate(models.generators['g'], params['g'], batch_stats['g'], z)


def generate_samples(config: ml_collections.ConfigDict, models: Models, params: dict[str, Any],
                     batch_stats: dict[str, Any], num: int) -> np.ndarray:
  """G(sample_z(config, num)) as [num, H, W, C] in [-1, 1], drawn in batches of
  num_sample_images (batch norm sees batches of the grid's size), so the first batch is the
  sample grid's images."""
  batch = config.num_sample_images
  z = sample_z(config, -(-num // batch) * batch)
  return np.concatenate([np.asarray(generate(models, params, batch_stats, z[i:i + batch]))
                         for i in range(0, len(z), batch)])[:num]
