"""CycleGAN: two generators (G_AB: A → B, G_BA: B → A), two discriminators (D_A judges domain
A, D_B domain B), image pools, and the pure per-device step.

The step is written with explicit collectives over `parallel.AXIS_NAME` only (pmean of
gradients and metrics, batch norm over the global batch, an all-gather of the fakes for the
pools), so `parallel` may wrap it with pmap or shard_map unchanged. The whole state, pools
included, stays identical on every device: the pools are one global pool per domain, as the
reference's single pool at the global batch (image_pool.query_global), and the penalty's
mixes are drawn for the global batch.
"""

from collections.abc import Callable
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cyclegan_jax import image_pool, losses, optim, parallel, visualize
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.families import base
from cyclegan_jax.metrics import digits, fid
from cyclegan_jax.models import discriminators, generators, vgg
from cyclegan_jax.parallel import AXIS_NAME

_INVARIANCE_STREAM = 2  # fold_in tag of the channel flips' key (the penalty's mixes use 0 and 1).
GENERATORS = ('g_ab', 'g_ba')  # G_AB: A → B, G_BA: B → A.
DISCRIMINATORS = ('d_a', 'd_b')  # D_A judges domain A, D_B judges domain B.

# semantic_loss(real_a, rec_a, real_b, rec_b) -> weighted scalar, added to the generator loss.
SemanticLoss = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Models(base.Models):
  """G_AB maps input_nc → output_nc channels and G_BA maps back, so they are separate modules;
  one discriminator module serves both domains. `semantic_loss` holds the VGG16 weights, read
  when the models are built, never inside the step's trace."""
  semantic_loss: SemanticLoss | None = None
  # digit_loss(real_a, rec_a, real_b, rec_b, fake_a, fake_b) -> {term: weighted scalar}.
  digit_loss: Callable[..., dict[str, jax.Array]] | None = None


def make_semantic_loss(loss_config: ml_collections.ConfigDict) -> SemanticLoss | None:
  """The VGG16 semantic cycle loss from config.loss, or None when lambda_semantic is 0. Its
  parameters are closed over, so they enter the jitted step as constants."""
  if loss_config.lambda_semantic <= 0:
    return None
  layers = tuple(name.strip() for name in loss_config.semantic_layers.split(','))
  vgg.check_layers(layers)
  params = vgg.load_params(loss_config.vgg_path or None)
  net = vgg.VGG16(layers)
  return functools.partial(losses.semantic_cycle_loss,
                           lambda x: net.apply({'params': params}, x),
                           weight=loss_config.lambda_semantic)


def _g_ba_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """G_BA's settings: config.model mapping output_nc back to input_nc, with its own dropout
  where model.dropout_g_ba is set (configs saved by earlier versions have none)."""
  to_a = model.copy_and_resolve_references()
  to_a.output_nc = model.input_nc
  if model.get('dropout_g_ba') is not None:
    generators.check_dropout('model.dropout_g_ba', model.dropout_g_ba)
    to_a.dropout = model.dropout_g_ba
  return to_a


def create_models(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  lr_scale: float = 1.0, training_losses: bool = True) -> Models:
  """Without `training_losses`, no VGG16 or digit teacher is read: translating, exporting or
  evaluating a trained model must not need the training run's data directory."""
  return Models(generators={'g_ab': generators.create_generator(config.model,
                                                                base.reference_nc(config.model)),
                            'g_ba': generators.create_generator(_g_ba_config(config.model))},
                discriminator=discriminators.create_discriminator(config.model),
                semantic_loss=make_semantic_loss(config.loss) if training_losses else None,
                digit_loss=(digits.make_label_consistency_loss(config) if training_losses
                            else None),
                **optim.create_optimizers(config, steps_per_epoch, lr_scale))


def check_config(config: ml_collections.ConfigDict) -> None:
  if config.loss.get('r1_gamma'):
    raise ValueError('loss.r1_gamma is a DCGAN option; the CycleGAN step has no R1 penalty.')
  if config.loss.lambda_semantic > 0:
    vgg.check_layers(tuple(n.strip() for n in config.loss.semantic_layers.split(',')))
  digits.check_label_consistency(config)
  if base.reference_nc(config.model) and config.batch_size < 2:
    raise ValueError(f'model.style_reference needs batch_size >= 2, not {config.batch_size}.')
  generators.create_generator(config.model, base.reference_nc(config.model))
  generators.create_generator(_g_ba_config(config.model))
  base.check_discriminator_output(config, discriminators.create_discriminator(config.model),
                                  config.model.output_nc)


def create_train_state(config: ml_collections.ConfigDict, models: Models,
                       key: jax.Array) -> base.TrainState:
  """Fresh parameters for all four networks, optimizer states, empty pools, step 0, built in
  one jitted function: eager init compiles every op separately (seconds per model)."""
  model = config.model
  size = config.data.crop_size
  init_key, step_key = jax.random.split(key)
  channels = {'a': model.input_nc, 'b': model.output_nc}
  modules_and_inputs = {'g_ab': (models.generators['g_ab'], 'a'),
                        'g_ba': (models.generators['g_ba'], 'b'),
                        'd_a': (models.discriminator, 'a'), 'd_b': (models.discriminator, 'b')}

  @jax.jit
  def init(init_key):
    keys = jax.random.split(base.init_key(init_key), len(modules_and_inputs))
    params, batch_stats = {}, {}
    for k, (name, (module, domain)) in zip(keys, modules_and_inputs.items()):
      params[name], batch_stats[name] = base.init_variables(module, k,
                                                            (size, size, channels[domain]))
    return (params, batch_stats, models.tx_g.init(_subset(params, GENERATORS)),
            models.tx_d.init(_subset(params, DISCRIMINATORS)))

  params, batch_stats, opt_state_g, opt_state_d = init(init_key)
  pools = {d: image_pool.init(config.loss.pool_size, (size, size, channels[d]))
           for d in ('a', 'b')}
  return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                         opt_state_g=opt_state_g, opt_state_d=opt_state_d, pools=pools,
                         rng=step_key)


def _subset(tree: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
  return {name: tree[name] for name in names}


def channel_flips(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """±1 per image and channel, each −1 with probability ½, drawn for the global batch: times an
  image in [−1, 1], it inverts those channels (x → 255 − x in bytes)."""
  return parallel.share_of_global(
      lambda n: jnp.where(jax.random.bernoulli(key, 0.5, (n, 1, 1, shape[-1])), -1.0, 1.0),
      shape[0])


def train_step(state: base.TrainState, batch: dict[str, jax.Array], *, models: Models,
               config: ml_collections.ConfigDict) -> tuple[base.TrainState, dict[str, jax.Array]]:
  """One CycleGAN update on this device's share of the batch ({'a': [b,H,W,C], 'b': ...}):
  the generators, then the discriminators on pooled fakes, as the reference."""
  loss = config.loss
  mode = loss.gan_mode
  real_a, real_b = batch['a'], batch['b']
  step_key = jax.random.fold_in(state.rng, state.step)  # The same on every device.
  pool_a_key, pool_b_key, gp_key, device_key = jax.random.split(step_key, 4)
  g_key, d_key = jax.random.split(jax.random.fold_in(device_key, jax.lax.axis_index(AXIS_NAME)))
  modules = parallel.in_step({**models.generators,  # One discriminator judges both domains.
                              'd_a': models.discriminator, 'd_b': models.discriminator})

  # model.style_reference: G_AB(a) reads another B image (base.py), G_AB(G_BA(b)) reads b.
  style = base.style_references(config.model, real_b)
  to_b = lambda net, x, ref: net('g_ab', x, **({'reference': ref} if style else {}))

  def generator_loss(g_params):
    net = base.Networks(modules, {**state.params, **g_params}, state.batch_stats, g_key)
    fake_b = to_b(net, real_a, style[0] if style else None)
    fake_a = net('g_ba', real_b)
    rec_a, rec_b = net('g_ba', fake_b), to_b(net, fake_a, real_b)
    terms = {'g_adv_a': losses.generator_gan_loss(net('d_a', fake_a), mode),
             'g_adv_b': losses.generator_gan_loss(net('d_b', fake_b), mode)}
    terms['cycle_a'], terms['cycle_b'] = losses.cycle_consistency_loss(
        real_a, rec_a, real_b, rec_b, loss.lambda_a, loss.lambda_b)
    if loss.lambda_identity > 0:
      terms['idt_a'], terms['idt_b'] = losses.identity_loss(
          real_a, net('g_ba', real_a), real_b, net('g_ab', real_b),
          loss.lambda_a, loss.lambda_b, loss.lambda_identity)
    if models.semantic_loss is not None:
      terms['semantic'] = models.semantic_loss(real_a, rec_a, real_b, rec_b)
    if models.digit_loss is not None:
      terms.update(models.digit_loss(real_a, rec_a, real_b, rec_b, fake_a, fake_b))
    if loss.lambda_invariance_b > 0:
      terms['invariance_b'] = loss.lambda_invariance_b * losses.l1_loss(
          fake_a, net('g_ba', real_b * channel_flips(
              jax.random.fold_in(gp_key, _INVARIANCE_STREAM), real_b.shape)))
    if style:
      terms['style'] = loss.lambda_style * losses.colour_statistics_loss(fake_b, *style)
    return sum(terms.values()), (terms, fake_a, fake_b, net.batch_stats)

  g_params = _subset(state.params, GENERATORS)
  (g_total, (g_terms, fake_a, fake_b, batch_stats)), g_grads = jax.value_and_grad(
      generator_loss, has_aux=True)(g_params)
  g_grads = jax.lax.pmean(g_grads, AXIS_NAME)
  g_params, opt_state_g = base.optimizer_update(models.tx_g, g_grads, state.opt_state_g, g_params)

  pool_a, pooled_a = image_pool.query_global(state.pools['a'], jax.lax.stop_gradient(fake_a),
                                             pool_a_key, AXIS_NAME)
  pool_b, pooled_b = image_pool.query_global(state.pools['b'], jax.lax.stop_gradient(fake_b),
                                             pool_b_key, AXIS_NAME)

  def discriminator_loss(d_params):
    net = base.Networks(modules, {**state.params, **d_params}, batch_stats, d_key)
    terms, total = {}, 0.0
    for domain, real, fake, gp_k in (('a', real_a, pooled_a, gp_key),
                                     ('b', real_b, pooled_b, jax.random.fold_in(gp_key, 1))):
      name = f'd_{domain}'
      pred_real, pred_fake = net(name, real), net(name, fake)
      terms[name] = losses.discriminator_loss(pred_real, pred_fake, mode)
      if mode == 'wgangp':
        alpha = parallel.share_of_global(lambda n, k=gp_k: jax.random.uniform(k, (n,)),
                                         real.shape[0])
        terms[f'{name}_gp'] = losses.gradient_penalty(
            lambda x, name=name: net(name, x, keep_stats=False), real, fake, alpha,
            loss.lambda_gp)
      terms[f'{name}_real'] = jnp.mean(pred_real)
      terms[f'{name}_fake'] = jnp.mean(pred_fake)
      total += terms[name] + terms.get(f'{name}_gp', 0.0)
    return total, (terms, net.batch_stats)

  d_params = _subset(state.params, DISCRIMINATORS)
  (d_total, (d_terms, batch_stats)), d_grads = jax.value_and_grad(
      discriminator_loss, has_aux=True)(d_params)
  d_grads = jax.lax.pmean(d_grads, AXIS_NAME)
  d_params, opt_state_d = base.optimizer_update(models.tx_d, d_grads, state.opt_state_d, d_params)

  metrics = {**g_terms, **d_terms, 'g_total': g_total, 'd_total': d_total,
             'g_grad_norm': optax.tree.norm(g_grads), 'd_grad_norm': optax.tree.norm(d_grads),
             'lr_g': models.lr_g(state.step), 'lr_d': models.lr_d(state.step)}
  new_state = state.replace(
      step=state.step + 1, params={**g_params, **d_params},
      batch_stats=batch_stats,
      opt_state_g=opt_state_g, opt_state_d=opt_state_d, pools={'a': pool_a, 'b': pool_b})
  return new_state, jax.lax.pmean(metrics, AXIS_NAME)


def translate(models: Models, params: dict[str, Any], batch_stats: dict[str, Any], name: str,
              images: np.ndarray, batch_size: int) -> np.ndarray:
  """Generator `name` ('g_ab' or 'g_ba') in eval mode over `images`."""
  return base.apply_in_batches(models.generators[name], params[name], batch_stats[name], images,
                               batch_size)


def make_sampler(config: ml_collections.ConfigDict, models: Models,
                 data: input_pipeline.Data) -> base.Sampler:
  """Rows of real | translated | reconstructed for fixed test images of both domains."""
  real_a, real_b = (data.eval_images(d, config.num_sample_images) for d in 'ab')

  def sample(params, batch_stats):
    g = lambda name, x: translate(models, params, batch_stats, name, x, len(x))
    fake_b, fake_a = g('g_ab', real_a), g('g_ba', real_b)
    return visualize.cycle_grid(real_a, fake_b, g('g_ba', fake_b), real_b, fake_a,
                                g('g_ab', fake_a))

  return sample


def digit_metrics(config: ml_collections.ConfigDict, models: Models, data: input_pipeline.Data,
                  params: dict[str, Any], batch_stats: dict[str, Any]) -> dict[str, float]:
  """How well G_BA (or G_AB) keeps the digit of num_digit_eval_images test images."""
  real, translated = {}, {}
  for source, _ in digits.translations_into_mnist(config.data):
    real[source] = data.eval_images(source, config.num_digit_eval_images)
    translated[source] = translate(models, params, batch_stats,
                                   {'a': 'g_ab', 'b': 'g_ba'}[source], real[source],
                                   digits.EVAL_BATCH)
  return digits.accuracy_of_translations(config, real, translated)


def evaluate(config: ml_collections.ConfigDict, models: Models, data: input_pipeline.Data,
             params: dict[str, Any], batch_stats: dict[str, Any],
             scorer: fid.Scorer) -> tuple[dict[str, int], dict[str, float]]:
  """Both directions against the real test images of their target domain: G_AB(test A) against
  test B, G_BA(test B) against test A; on digits also the digit accuracy of the translations."""
  real = {d: data.eval_images(d, config.eval.num_images) for d in 'ab'}
  # The digit accuracy reads every translation into MNIST; FID/KID only their fixed sample.
  read_in_full = ({source for source, _ in digits.translations_into_mnist(config.data)}
                  if config.data.source == 'digits' else set())
  source = {d: real[d] if d in read_in_full else scorer.sample(real[d]) for d in 'ab'}
  fake = {'b': translate(models, params, batch_stats, 'g_ab', source['a'], config.eval.batch_size),
          'a': translate(models, params, batch_stats, 'g_ba', source['b'], config.eval.batch_size)}
  metrics = {**base.fid_and_kid(scorer, fake['b'], real['b'], 'b', '_a_to_b'),
             **base.fid_and_kid(scorer, fake['a'], real['a'], 'a', '_b_to_a')}
  if config.data.source == 'digits':
    metrics.update(digits.accuracy_of_translations(config, real, {'a': fake['b'], 'b': fake['a']}))
  return {d: len(real[d]) for d in 'ab'}, metrics


def log_columns(scalars: dict[str, float]) -> dict[str, float]:
  """Seed S0's log columns: Loss_D (both critics), Loss_G (both adversarial terms), Loss_C (both
  weighted cycle terms)."""
  return {'Loss_D': scalars['d_total'], 'Loss_G': scalars['g_adv_a'] + scalars['g_adv_b'],
          'Loss_C': scalars['cycle_a'] + scalars['cycle_b']}


FAMILY = base.Family(
    check_config=check_config, create_models=create_models,
    create_train_state=create_train_state, train_step=train_step, domains='ab',
    make_sampler=make_sampler, digit_metrics=digit_metrics, evaluate=evaluate,
    translators={'AtoB': ('g_ab', 'a'), 'BtoA': ('g_ba', 'b')},
    loss_groups={
        'generator': ['g_adv_a', 'g_adv_b', 'cycle_a', 'cycle_b', 'idt_a', 'idt_b', 'semantic',
                      'invariance_b', 'digit', 'digit_self', 'style'],
        'discriminator': ['d_a', 'd_b', 'd_a_gp', 'd_b_gp'],
        'totals': ['g_total', 'd_total']},
    log_columns=log_columns)
