"""CUT and FastCUT (Park, Efros, Zhang and Zhu, "Contrastive Learning for Unpaired
Image-to-Image Translation", ECCV 2020): one generator G (A → B), one PatchGAN D on domain B,
and a projection head F, trained with an adversarial loss and PatchNCE instead of a cycle.

Three parameter trees ('g', 'd', 'f'). PatchNCE asks each patch of G(x), seen through G's own
encoder and F, to pick out the patch of x at the same location among the other locations of x.
FastCUT (configs/fastcut.py): the same step, no identity term, λ_NCE 10, flip-equivariance.

The step is pure and uses only explicit collectives over `parallel.AXIS_NAME`. The patch
locations and the flip are drawn from the step's key alone, the same on every device (the
reference draws them once for its whole batch), and batch norm (if chosen) spans the global
batch, so the step on n devices equals the step on one device with the same global batch.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cyclegan_jax import losses, optim, parallel, visualize
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.families import base
from cyclegan_jax.metrics import digits, fid
from cyclegan_jax.models import discriminators, generators, projection
from cyclegan_jax.parallel import AXIS_NAME

# CycleGAN settings with no meaning here, and the value a CUT config must leave them at.
_NOT_APPLICABLE = {
    'loss.pool_size': (0, 'CUT trains without an image pool'),
    'loss.lambda_identity': (0.0, 'its identity term is the NCE one, loss.nce_idt'),
    'loss.lambda_a': (0.0, 'there is no cycle; the NCE weight is loss.lambda_nce'),
    'loss.lambda_b': (0.0, 'there is no cycle; the NCE weight is loss.lambda_nce'),
    'loss.lambda_semantic': (0.0, 'there is no cycle for the semantic cycle loss'),
    'loss.lambda_invariance_b': (0.0, 'there is no G_BA to hold invariant'),
    'loss.lambda_digit': (0.0, 'there is no cycle for the label-consistency loss'),
    'loss.lambda_digit_self': (0.0, 'the CUT step has no digit teacher'),
    'loss.r1_gamma': (0.0, 'R1 is a DCGAN option'),
    'model.style_reference': (False, 'its G reads no style reference'),
}


@dataclasses.dataclass(frozen=True)
class Models(base.Models):
  """generators={'g': G}; `projection` is F. F's Adam uses G's settings and schedule
  (tx_g, lr_g), as the reference builds optimizer_F, with its own state."""
  projection: nn.Module | None = None


def nce_layers(model: ml_collections.ConfigDict) -> tuple[int, ...]:
  """model.nce_layers ('0,4,8,12,16') as sorted distinct indices, naming the key if not."""
  try:
    found = tuple(int(i) for i in str(model.nce_layers).split(','))
  except ValueError:
    found = ()
  if not found or list(found) != sorted(set(found)) or found[0] < 0:
    raise ValueError(f'model.nce_layers={model.nce_layers!r}: expected increasing layer indices '
                     "of the generator's Sequential, e.g. '0,4,8,12,16'.")
  return found


def create_models(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  lr_scale: float = 1.0, training_losses: bool = True) -> Models:
  del training_losses  # PatchNCE's projection is a trained network, in the state.
  model = config.model
  return Models(generators={'g': generators.create_generator(model)},
                discriminator=discriminators.create_discriminator(model),
                projection=projection.PatchProjection(model.projection_features,
                                                      model.init_type, model.init_gain),
                **optim.create_optimizers(config, steps_per_epoch, lr_scale))


def _feature_shapes(config: ml_collections.ConfigDict, generator: nn.Module):
  """The shapes of G's NCE features for one crop, without running it."""
  size = config.data.crop_size
  image = jax.ShapeDtypeStruct((1, size, size, config.model.input_nc), jnp.float32)
  return jax.eval_shape(
      lambda x: generator.init_with_output(jax.random.key(0), x, train=False,
                                           feature_layers=nce_layers(config.model))[0], image)


def check_config(config: ml_collections.ConfigDict) -> None:
  problems = []
  for key, (value, why) in _NOT_APPLICABLE.items():
    section, name = key.split('.')
    if config[section].get(name, value) != value:
      problems.append(f'{key}={config[section][name]} does not apply to CUT ({why}); set it to '
                      f'{value}.')
  if config.model.generator.startswith('unet') or config.model.generator == 'dcgan':
    problems.append(f'model.generator={config.model.generator!r}: CUT takes its NCE features from '
                    "a ResNet generator's layers; use resnet_9blocks or resnet_<n>blocks.")
  if config.loss.gan_mode == 'wgangp':
    problems.append("loss.gan_mode='wgangp' needs a gradient penalty, which the CUT step does not "
                    'compute; use lsgan (the reference), vanilla or hinge.')
  if any(config.init_from_pth.values()):
    problems.append('init_from_pth: reference .pth files hold CycleGAN networks; CUT starts from '
                    'a fresh init.')
  loss = config.loss
  if not (loss.lambda_nce >= 0 and loss.lambda_gan >= 0 and loss.nce_temperature > 0 and
          loss.num_patches > 0 and config.model.projection_features > 0):
    problems.append(f'loss.lambda_nce={loss.lambda_nce}, lambda_gan={loss.lambda_gan} must be '
                    f'>= 0; nce_temperature={loss.nce_temperature}, num_patches='
                    f'{loss.num_patches} and model.projection_features='
                    f'{config.model.projection_features} > 0.')
  if config.eval_every_steps and config.data.source == 'digits' and config.data.domain_b != 'mnist':
    problems.append(f'eval_every_steps: CUT translates A → B only, and the digit classifier '
                    f"reads MNIST: data.domain_b must be 'mnist', not {config.data.domain_b!r}.")
  if problems:
    raise ValueError('\n'.join(problems))
  generator = generators.create_generator(config.model)
  try:
    _feature_shapes(config, generator)
  except ValueError as e:
    raise ValueError(f'model.nce_layers={config.model.nce_layers!r}: {e}') from None
  base.check_discriminator_output(config, discriminators.create_discriminator(config.model),
                                  config.model.output_nc)


def create_train_state(config: ml_collections.ConfigDict, models: Models,
                       key: jax.Array) -> base.TrainState:
  """Fresh G, D and F (F's shapes from G's features), their Adam states, step 0, no pools."""
  size, model, generator = config.data.crop_size, config.model, models.generators['g']
  init_key, step_key = jax.random.split(key)
  patches = [jnp.zeros((1, 1, f.shape[-1])) for f in _feature_shapes(config, generator)]

  @jax.jit
  def init(init_key):
    g_key, d_key, f_key = jax.random.split(base.init_key(init_key), 3)
    params, batch_stats = {}, {}
    params['g'], batch_stats['g'] = base.init_variables(generator, g_key,
                                                        (size, size, model.input_nc))
    params['d'], batch_stats['d'] = base.init_variables(models.discriminator, d_key,
                                                        (size, size, model.output_nc))
    params['f'], batch_stats['f'] = models.projection.init(f_key, patches)['params'], {}
    opt_state_g = {'g': models.tx_g.init(params['g']), 'f': models.tx_g.init(params['f'])}
    return params, batch_stats, opt_state_g, models.tx_d.init(params['d'])

  params, batch_stats, opt_state_g, opt_state_d = init(init_key)
  return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                         opt_state_g=opt_state_g, opt_state_d=opt_state_d, pools={}, rng=step_key)


def _flip(x: jax.Array, flipped: jax.Array) -> jax.Array:
  """x mirrored left-right where `flipped` (a traced bool), else x."""
  return jnp.where(flipped, x[:, :, ::-1], x)


def _patches(features: list[jax.Array], ids: list[jax.Array]) -> list[jax.Array]:
  """[B, H, W, C] per layer → [B, P, C] at the flat locations `ids` (the same for the batch)."""
  return [f.reshape(f.shape[0], -1, f.shape[-1])[:, i] for f, i in zip(features, ids)]


def _nce_loss(net: base.Networks, config: ml_collections.ConfigDict, source: jax.Array,
              target: jax.Array, flipped: jax.Array, key: jax.Array) -> jax.Array:
  """λ_NCE · PatchNCE(G's features of `target` = G(source), of `source`), averaged over the
  NCE layers; as the reference's calculate_NCE_loss. The queries come from the translation,
  the keys from the source, at the same random locations per layer."""
  layers = nce_layers(config.model)
  queries = [_flip(f, flipped) for f in net('g', target, feature_layers=layers)]
  keys = net('g', source, feature_layers=layers)
  ids = [jax.random.permutation(k, f.shape[1] * f.shape[2])[:config.loss.num_patches]
         for k, f in zip(jax.random.split(key, len(keys)), keys)]
  key_patches = net('f', _patches(keys, ids))
  query_patches = net('f', _patches(queries, ids))
  per_layer = [losses.patch_nce_loss(q, k, config.loss.nce_temperature)
               for q, k in zip(query_patches, key_patches)]
  return config.loss.lambda_nce * sum(per_layer) / len(per_layer)


def train_step(state: base.TrainState, batch: dict[str, jax.Array], *, models: Models,
               config: ml_collections.ConfigDict) -> tuple[base.TrainState, dict[str, jax.Array]]:
  """One CUT update on this device's share of the batch, in the reference's order: G(x) (and
  G(y) for the identity term) once; D on the detached fakes; then G and F through the updated
  D and PatchNCE (G's gradient through its fakes comes back by their vjp)."""
  loss = config.loss
  real_a, real_b = batch['a'], batch['b']
  step_key = jax.random.fold_in(state.rng, state.step)  # The same on every device.
  flip_key, nce_key, nce_idt_key = jax.random.split(step_key, 3)
  device_key = jax.random.fold_in(step_key, jax.lax.axis_index(AXIS_NAME))
  g_key, d_key, loss_key = jax.random.split(device_key, 3)
  modules = parallel.in_step({'g': models.generators['g'], 'd': models.discriminator,
                              'f': models.projection})
  flipped = jnp.logical_and(loss.flip_equivariance, jax.random.uniform(flip_key) < 0.5)
  real = jnp.concatenate([real_a, real_b]) if loss.nce_idt else real_a

  fake, g_vjp, g_stats = jax.vjp(
      lambda g: base.apply_train(modules['g'], g, state.batch_stats['g'], _flip(real, flipped),
                                 rngs={'dropout': g_key}),
      state.params['g'], has_aux=True)
  fake_b, idt_b = fake[:len(real_a)], fake[len(real_a):]

  def discriminator_loss(d_params):
    net = base.Networks(modules, {'d': d_params}, state.batch_stats, d_key)
    pred_fake = net('d', jax.lax.stop_gradient(fake_b))
    pred_real = net('d', real_b)
    terms = {'d_fake_loss': losses.gan_loss(pred_fake, False, loss.gan_mode),
             'd_real_loss': losses.gan_loss(pred_real, True, loss.gan_mode),
             'd_real': jnp.mean(pred_real), 'd_fake': jnp.mean(pred_fake)}
    return 0.5 * (terms['d_fake_loss'] + terms['d_real_loss']), (terms, net.batch_stats['d'])

  (d_total, (d_terms, d_stats)), d_grads = jax.value_and_grad(
      discriminator_loss, has_aux=True)(state.params['d'])
  d_grads = jax.lax.pmean(d_grads, AXIS_NAME)
  d_params, opt_state_d = base.optimizer_update(models.tx_d, d_grads, state.opt_state_d,
                                                state.params['d'])

  def generator_loss(fake, g_params, f_params):
    net = base.Networks(modules, {'g': g_params, 'd': d_params, 'f': f_params},
                        {**state.batch_stats, 'g': g_stats, 'd': d_stats}, loss_key)
    fake_b, idt_b = fake[:len(real_a)], fake[len(real_a):]
    terms = {'g_gan': loss.lambda_gan * losses.generator_gan_loss(net('d', fake_b),
                                                                  loss.gan_mode),
             'nce': _nce_loss(net, config, real_a, fake_b, flipped, nce_key)}
    nce = terms['nce']
    if loss.nce_idt:
      terms['nce_idt'] = _nce_loss(net, config, real_b, idt_b, flipped, nce_idt_key)
      nce = 0.5 * (nce + terms['nce_idt'])
    return terms['g_gan'] + nce, (terms, net.batch_stats)

  (g_total, (g_terms, batch_stats)), (fake_grads, g_grads, f_grads) = jax.value_and_grad(
      generator_loss, argnums=(0, 1, 2), has_aux=True)(fake, state.params['g'],
                                                       state.params['f'])
  g_grads = jax.tree.map(jnp.add, g_grads, g_vjp(fake_grads)[0])
  g_grads, f_grads = jax.lax.pmean((g_grads, f_grads), AXIS_NAME)
  g_params, opt_g = base.optimizer_update(models.tx_g, g_grads, state.opt_state_g['g'],
                                          state.params['g'])
  f_params, opt_f = base.optimizer_update(models.tx_g, f_grads, state.opt_state_g['f'],
                                          state.params['f'])

  metrics = {**g_terms, **d_terms, 'g_total': g_total, 'd_total': d_total,
             'g_grad_norm': optax.tree.norm(g_grads), 'f_grad_norm': optax.tree.norm(f_grads),
             'd_grad_norm': optax.tree.norm(d_grads),
             'lr_g': models.lr_g(state.step), 'lr_d': models.lr_d(state.step)}
  new_state = state.replace(
      step=state.step + 1, params={'g': g_params, 'd': d_params, 'f': f_params},
      batch_stats=batch_stats, opt_state_g={'g': opt_g, 'f': opt_f}, opt_state_d=opt_state_d)
  return new_state, jax.lax.pmean(metrics, AXIS_NAME)


def translate(models: Models, params: dict[str, Any], batch_stats: dict[str, Any],
              images: np.ndarray, batch_size: int) -> np.ndarray:
  """G in eval mode over `images` (domain A)."""
  return base.apply_in_batches(models.generators['g'], params['g'], batch_stats['g'], images,
                               batch_size)


def make_sampler(config: ml_collections.ConfigDict, models: Models,
                 data: input_pipeline.Data) -> base.Sampler:
  """Rows of real | G(real) for fixed test images of A (the translation), then of B (G's
  identity mapping, which the NCE identity term keeps close to its input)."""
  real = np.concatenate([data.eval_images(d, config.num_sample_images) for d in 'ab'])

  def sample(params, batch_stats):
    fake = translate(models, params, batch_stats, real, len(real))
    return visualize.image_grid([[r, f] for r, f in zip(real, fake)])

  return sample


def digit_metrics(config: ml_collections.ConfigDict, models: Models, data: input_pipeline.Data,
                  params: dict[str, Any], batch_stats: dict[str, Any]) -> dict[str, float]:
  """How well G keeps the digit of num_digit_eval_images test images of A (B is MNIST)."""
  real = data.eval_images('a', config.num_digit_eval_images)
  translated = translate(models, params, batch_stats, real, digits.EVAL_BATCH)
  return digits.accuracy_of_translations(config, {'a': real}, {'a': translated})


def evaluate(config: ml_collections.ConfigDict, models: Models, data: input_pipeline.Data,
             params: dict[str, Any], batch_stats: dict[str, Any],
             scorer: fid.Scorer) -> tuple[dict[str, int], dict[str, float]]:
  """G(test A) against test B (fid_a_to_b, kid_a_to_b); with MNIST as B, the digit accuracy too."""
  real = {d: data.eval_images(d, config.eval.num_images) for d in 'ab'}
  into_mnist = config.data.source == 'digits' and config.data.domain_b == 'mnist'
  source = real['a'] if into_mnist else scorer.sample(real['a'])
  fake_b = translate(models, params, batch_stats, source, config.eval.batch_size)
  metrics = base.fid_and_kid(scorer, fake_b, real['b'], 'b', '_a_to_b')
  if into_mnist:
    metrics.update(digits.accuracy_of_translations(config, real, {'a': fake_b}))
  return {d: len(real[d]) for d in 'ab'}, metrics


def log_columns(scalars: dict[str, float]) -> dict[str, float]:
  """The reference's printed losses: D (D_real + D_fake halved), G_GAN and NCE (and NCE_Y)."""
  names = {'Loss_D': 'd_total', 'Loss_G_GAN': 'g_gan', 'Loss_NCE': 'nce', 'Loss_NCE_Y': 'nce_idt'}
  return {column: scalars[key] for column, key in names.items() if key in scalars}


FAMILY = base.Family(
    check_config=check_config, create_models=create_models,
    create_train_state=create_train_state, train_step=train_step, domains='ab',
    make_sampler=make_sampler, digit_metrics=digit_metrics, evaluate=evaluate,
    translators={'AtoB': ('g', 'a')},
    loss_groups={'generator': ['g_gan', 'nce', 'nce_idt'],
                 'discriminator': ['d_real_loss', 'd_fake_loss'],
                 'totals': ['g_total', 'd_total']},
    log_columns=log_columns)
