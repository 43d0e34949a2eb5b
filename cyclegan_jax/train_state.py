"""The train state pytree and everything static the step needs (models, optimizers, schedules).

The state is plain data (arrays in dicts and dataclasses), so it replicates, donates and
checkpoints as a whole. Modules and optax transformations are static and live beside it in
`Models`.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from cyclegan_jax import discriminators, generators, image_pool

GENERATORS = ('g_ab', 'g_ba')  # G_AB: A → B, G_BA: B → A.
DISCRIMINATORS = ('d_a', 'd_b')  # D_A judges domain A, D_B judges domain B.
LR_POLICIES = ('linear', 'step', 'cosine', 'constant')


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates applied so far.
  params: dict[str, Any]  # {g_ab, g_ba, d_a, d_b}
  batch_stats: dict[str, Any]  # same keys; empty dicts unless a norm keeps running statistics.
  opt_state_g: optax.OptState  # One Adam over both generators, as in the reference.
  opt_state_d: optax.OptState  # One Adam over both discriminators.
  pools: dict[str, image_pool.PoolState]  # 'a': past fakes of A for D_A; 'b': of B for D_B.
  rng: jax.Array  # Base key; each step and device folds in (step, device index).


@dataclasses.dataclass(frozen=True)
class Models:
  """The static half of training: modules, optimizers and their lr schedules.

  G_AB maps input_nc → output_nc channels and G_BA maps back, so they are separate modules.
  """
  generators: dict[str, nn.Module]
  discriminator: nn.Module
  tx_g: optax.GradientTransformation
  tx_d: optax.GradientTransformation
  lr_g: optax.Schedule
  lr_d: optax.Schedule


def create_schedule(optim: ml_collections.ConfigDict, lr: float,
                    steps_per_epoch: int) -> optax.Schedule:
  """The reference lr policies, counted in steps (an epoch is `steps_per_epoch` steps).

  `linear` keeps lr for n_epochs epochs, then decays linearly to 0 at the end of
  n_epochs_decay more (the reference steps once per epoch and stops at lr/(n_decay+1); we
  decay per step). `step` multiplies by 0.1 every lr_decay_epochs; `cosine` anneals to 0 over
  the whole run.
  """
  if optim.lr_policy not in LR_POLICIES:
    raise ValueError(f'unknown lr_policy {optim.lr_policy!r}; expected one of '
                     f'{", ".join(LR_POLICIES)}')
  if steps_per_epoch <= 0:
    raise ValueError(f'steps_per_epoch must be positive, got {steps_per_epoch}')
  constant_steps = optim.n_epochs * steps_per_epoch
  total_steps = (optim.n_epochs + optim.n_epochs_decay) * steps_per_epoch
  if optim.lr_policy == 'linear':
    decay = optax.linear_schedule(lr, 0.0, max(total_steps - constant_steps, 1))
    return optax.join_schedules([optax.constant_schedule(lr), decay], [constant_steps])
  if optim.lr_policy == 'step':
    return optax.exponential_decay(lr, optim.lr_decay_epochs * steps_per_epoch, 0.1,
                                   staircase=True)
  if optim.lr_policy == 'cosine':
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  return optax.constant_schedule(lr)


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  if config.num_train_steps >= 0:
    return config.num_train_steps
  return (config.optim.n_epochs + config.optim.n_epochs_decay) * steps_per_epoch


def create_optimizers(config: ml_collections.ConfigDict, steps_per_epoch: int,
                      lr_scale: float = 1.0) -> dict[str, Any]:
  """The Models fields tx_g, tx_d, lr_g, lr_d: Adam with the generators' and the discriminators'
  own lr and betas (the D's default to the G's). `lr_scale` scales both lrs (the divergence
  guard's rollback lowers it)."""
  optim = config.optim
  lr_d = optim.lr if optim.lr_d is None else optim.lr_d
  lr_g = create_schedule(optim, optim.lr * lr_scale, steps_per_epoch)
  lr_d = create_schedule(optim, lr_d * lr_scale, steps_per_epoch)
  betas_d = (optim.beta1 if optim.beta1_d is None else optim.beta1_d,
             optim.beta2 if optim.beta2_d is None else optim.beta2_d)
  return {'tx_g': optax.adam(lr_g, b1=optim.beta1, b2=optim.beta2),
          'tx_d': optax.adam(lr_d, b1=betas_d[0], b2=betas_d[1]), 'lr_g': lr_g, 'lr_d': lr_d}


def create_models(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  lr_scale: float = 1.0) -> Models:
  if config.loss.get('r1_gamma'):
    raise ValueError('loss.r1_gamma is a DCGAN option; the CycleGAN step has no R1 penalty.')
  to_a = config.model.copy_and_resolve_references()
  to_a.output_nc = config.model.input_nc
  return Models(generators={'g_ab': generators.create_generator(config.model),
                            'g_ba': generators.create_generator(to_a)},
                discriminator=discriminators.create_discriminator(config.model),
                **create_optimizers(config, steps_per_epoch, lr_scale))


def _init_variables(module: nn.Module, key: jax.Array, image_shape: tuple[int, ...]):
  dummy = jnp.zeros((1,) + image_shape, jnp.float32)
  variables = module.init({'params': key, 'dropout': key}, dummy, train=False)
  return variables['params'], variables.get('batch_stats', {})


def _init_key(key: jax.Array) -> jax.Array:
  """An 'rbg' key drawn from `key` for parameter init only: threefry's bit generation makes the
  init graph of a ResNet generator compile about 4× slower on CPU (26 s vs 7 s measured)."""
  return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl='rbg')


def _check_discriminator_output(config: ml_collections.ConfigDict, models: Models) -> None:
  """A crop too small for the discriminator gives an empty logit map, whose mean loss is NaN."""
  size = config.data.crop_size
  image = jnp.zeros((1, size, size, config.model.output_nc))
  out, _ = jax.eval_shape(lambda: models.discriminator.init_with_output(
      jax.random.key(0), image, train=False))
  if 0 in out.shape:
    raise ValueError(f'data.crop_size={size} is too small for discriminator '
                     f'{config.model.discriminator!r}: its output would be {out.shape[1]}×'
                     f'{out.shape[2]}; use a larger crop or fewer layers (model.n_layers_d).')


def create_train_state(config: ml_collections.ConfigDict, models: Models,
                       key: jax.Array) -> TrainState:
  """Fresh parameters for all four networks, optimizer states, empty pools, step 0.

  Built in one jitted function: eager init compiles every op separately (seconds per model).
  """
  model = config.model
  size = config.data.crop_size
  init_key, step_key = jax.random.split(key)
  channels = {'a': model.input_nc, 'b': model.output_nc}
  modules_and_inputs = {'g_ab': (models.generators['g_ab'], 'a'),
                        'g_ba': (models.generators['g_ba'], 'b'),
                        'd_a': (models.discriminator, 'a'), 'd_b': (models.discriminator, 'b')}

  @jax.jit
  def init(init_key):
    keys = jax.random.split(_init_key(init_key), len(modules_and_inputs))
    params, batch_stats = {}, {}
    for k, (name, (module, domain)) in zip(keys, modules_and_inputs.items()):
      params[name], batch_stats[name] = _init_variables(module, k,
                                                        (size, size, channels[domain]))
    return (params, batch_stats, models.tx_g.init({k: params[k] for k in GENERATORS}),
            models.tx_d.init({k: params[k] for k in DISCRIMINATORS}))

  _check_discriminator_output(config, models)
  params, batch_stats, opt_state_g, opt_state_d = init(init_key)
  pools = {d: image_pool.init(config.loss.pool_size, (size, size, channels[d]))
           for d in ('a', 'b')}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state_g=opt_state_g, opt_state_d=opt_state_d, pools=pools,
                    rng=step_key)
