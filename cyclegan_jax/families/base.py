"""The family contract and what every family shares: the train state, the static models, init
and apply helpers.

The state is plain data (arrays in dicts and dataclasses), so it replicates, donates and
checkpoints as a whole. Modules and optax transformations are static and live beside it in
`Models`. A family (cyclegan.py, cut.py, dcgan.py) fills in a `Family`; the loop, checkpointing,
evaluation and translation go through it and never ask which family they serve.
"""

from collections.abc import Callable, Mapping
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cyclegan_jax import image_pool, parallel
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.metrics import fid
from cyclegan_jax.progress import Progress


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates applied so far.
  params: dict[str, Any]  # One tree per network, e.g. {g_ab, g_ba, d_a, d_b}.
  batch_stats: dict[str, Any]  # Same keys; empty dicts unless a norm keeps running statistics.
  opt_state_g: optax.OptState  # One Adam over the generator side, as in the references.
  opt_state_d: optax.OptState  # One Adam over the discriminators.
  pools: dict[str, image_pool.PoolState]  # Past fakes per domain; {} for a family without.
  rng: jax.Array  # Base key; each step and device folds in (step, device index).


@dataclasses.dataclass(frozen=True)
class Models:
  """The static half of training: modules, optimizers and their lr schedules."""
  generators: dict[str, nn.Module]
  discriminator: nn.Module
  tx_g: optax.GradientTransformation
  tx_d: optax.GradientTransformation
  lr_g: optax.Schedule
  lr_d: optax.Schedule


# (params, batch_stats) of one replica → a uint8 sample grid.
Sampler = Callable[[dict[str, Any], dict[str, Any]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class LatentGenerator:
  """A generator of images from latents, named so that export serves it as the family samples."""
  name: str  # Its parameter tree.
  train_mode: bool  # Batch norm from each batch's own statistics (the DCGAN reference's samples).


@dataclasses.dataclass(frozen=True)
class Family:
  """What a model family does its own way. Per-device steps are pure and use only explicit
  collectives over `parallel.AXIS_NAME`."""
  check_config: Callable[[ml_collections.ConfigDict], None]  # Raises naming the key.
  # (config, steps_per_epoch, lr_scale=1.0, training_losses=True); training_losses=False leaves
  # out the networks only training losses read (a trained model's users need none of them).
  create_models: Callable[..., Models]
  create_train_state: Callable[..., TrainState]  # (config, models, key), unreplicated.
  train_step: Callable[..., Any]  # Per device: (state, batch, *, models, config).
  domains: str  # The training domains its batches hold ('ab' or 'a').
  # (config, models, data) → Sampler; its fixed inputs are prepared once, here.
  make_sampler: Callable[[ml_collections.ConfigDict, Models, input_pipeline.Data], Sampler]
  # (config, models, data, params, batch_stats) → digit metrics during training (source digits).
  digit_metrics: Callable[..., dict[str, float]]
  # (config, models, data, params, batch_stats, fid_scorer) → ({domain: images scored}, metrics).
  evaluate: Callable[..., tuple[dict[str, int], dict[str, float]]]
  # direction → (generator, input domain) that `translate` may run; empty: none.
  translators: Mapping[str, tuple[str, str]]
  loss_groups: dict[str, list[str]]  # Panels of loss_curves.png.
  log_columns: Callable[[dict[str, float]], dict[str, float]]  # The log line, loss_table.csv.
  # The generator that draws images from [b, model.nz] latents, which `export` serves; None: none.
  latent_generator: LatentGenerator | None = None

  def fresh_state(self, config: ml_collections.ConfigDict, models: Models) -> TrainState:
    """A new run's state, drawn from config.seed; unreplicated."""
    return self.create_train_state(config, models, jax.random.key(config.seed))

  def state_shapes(self, config: ml_collections.ConfigDict, models: Models) -> TrainState:
    """fresh_state's shapes and dtypes, without drawing it: all that restoring a checkpoint
    needs, so a resumed run or a loaded model skips the init's compile and run."""
    return jax.eval_shape(lambda: self.fresh_state(config, models))


def init_key(key: jax.Array) -> jax.Array:
  """An 'rbg' key drawn from `key` for parameter init only: threefry's bit generation makes the
  init graph of a ResNet generator compile about 4× slower on CPU."""
  return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl='rbg')


def init_variables(module: nn.Module, key: jax.Array, input_shape: tuple[int, ...]):
  """(params, batch_stats) of `module` for one input of `input_shape` (no batch axis)."""
  dummy = jnp.zeros((1,) + input_shape, jnp.float32)
  variables = module.init({'params': key, 'dropout': key}, dummy, train=False)
  return variables['params'], variables.get('batch_stats', {})


def check_discriminator_output(config: ml_collections.ConfigDict, discriminator: nn.Module,
                               channels: int) -> None:
  """A crop too small for the discriminator gives an empty logit map, whose mean loss is NaN."""
  size = config.data.crop_size
  image = jnp.zeros((1, size, size, channels))
  out, _ = jax.eval_shape(lambda: discriminator.init_with_output(
      jax.random.key(0), image, train=False))
  if 0 in out.shape:
    raise ValueError(f'data.crop_size={size} is too small for discriminator '
                     f'{config.model.discriminator!r}: its output would be {out.shape[1]}×'
                     f'{out.shape[2]}; use a larger crop or fewer layers (model.n_layers_d).')


def variables(params: Any, batch_stats: Any) -> dict[str, Any]:
  return {'params': params, **({'batch_stats': batch_stats} if batch_stats else {})}


def apply_train(module: nn.Module, params: Any, batch_stats: Any, x: jax.Array,
                rngs: dict[str, jax.Array] | None = None, **kwargs) -> tuple[Any, Any]:
  """One training-mode forward: (output, updated batch statistics)."""
  y, mutated = module.apply(variables(params, batch_stats), x, train=True,
                            mutable=['batch_stats'], rngs=rngs, **kwargs)
  return y, mutated.get('batch_stats', batch_stats)


# A step applies each network several times to inputs of one shape (a CycleGAN generator up
# to four times). Under its own jit, a network is traced once per module and input shape and
# lowered to one function that every call site shares, so the step traces and lowers faster
# (also when it comes from the compilation cache); XLA inlines the calls: the same program.
_apply_train_in_step = jax.jit(apply_train, static_argnums=0,
                               static_argnames=('feature_layers',))


def reference_nc(model: ml_collections.ConfigDict) -> int:
  """The channels of G_AB's style reference, a B image's (model.style_reference; configs saved
  by earlier versions have none)."""
  return model.output_nc if model.get('style_reference', False) else 0


def style_references(model: ml_collections.ConfigDict,
                     real_b: jax.Array) -> tuple[jax.Array, jax.Array] | None:
  """(references, weights) of this device's images under model.style_reference, else None.
  Each image of the global batch reads the next one's B image, whatever the topology, except
  the first, which reads none (zeros, weight 0), as translation and export run G_AB."""
  if not reference_nc(model):
    return None
  weights = parallel.share_of_global(lambda n: (jnp.arange(n) > 0).astype(jnp.float32),
                                     real_b.shape[0])
  return parallel.next_in_global_batch(real_b) * weights[:, None, None, None], weights


class Networks:
  """Runs a family's networks in training mode for one loss evaluation.

  It threads batch-norm statistics from call to call as successive PyTorch forwards would,
  and gives every call its own dropout key. One instance lives inside one traced function.
  CUT's feature_layers reaches the module as a static (hashable) value.
  """

  def __init__(self, modules: Mapping[str, nn.Module], params: dict[str, Any],
               batch_stats: dict[str, Any], key: jax.Array):
    self.modules, self.params, self.batch_stats = modules, params, dict(batch_stats)
    self.key, self.calls = key, 0

  def __call__(self, name: str, x: jax.Array, *, keep_stats: bool = True, **kwargs) -> Any:
    """Tree `name`'s module on x (kwargs go to the module, e.g. feature_layers).

    keep_stats=False: the call's batch statistics are dropped, as a call inside a derivative
    (a gradient penalty) must do: they are values of that derivative's trace only.
    """
    self.calls += 1
    y, batch_stats = _apply_train_in_step(
        self.modules[name], self.params[name], self.batch_stats[name], x,
        rngs={'dropout': jax.random.fold_in(self.key, self.calls)}, **kwargs)
    if keep_stats:
      self.batch_stats[name] = batch_stats
    return y


@functools.partial(jax.jit, static_argnums=(0, 4))
def apply(module: nn.Module, params: Any, batch_stats: Any, x: jax.Array,
          train: bool = False) -> jax.Array:
  """A network outside the train step, compiled once per module and input shape. `train=False`:
  eval mode (no dropout, batch norm from running averages); `train=True`: batch norm on the
  input's own statistics, as the DCGAN reference draws samples; nothing is updated."""
  if train:
    return apply_train(module, params, batch_stats, x)[0]
  return module.apply(variables(params, batch_stats), x, train=False)


def apply_in_batches(module: nn.Module, params: Any, batch_stats: Any, images: np.ndarray,
                     batch_size: int) -> np.ndarray:
  """`apply` in eval mode over many images, in batches of one size (the last one padded), so
  it compiles once."""
  batch_size = min(batch_size, len(images))
  out = []
  progress = Progress(type(module).__name__, len(images), 'images')
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    pad = np.zeros((batch_size - len(batch),) + batch.shape[1:], batch.dtype)
    out.append(np.asarray(apply(module, params, batch_stats, np.concatenate([batch, pad])))
               [:len(batch)])
    progress.update(start + len(batch))
  return np.concatenate(out)


def optimizer_update(tx: optax.GradientTransformation, grads, opt_state, params):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def fid_and_kid(scorer: fid.Scorer, fake: np.ndarray, real: np.ndarray, domain: str,
                prefix: str) -> dict[str, float]:
  """{'fid<prefix>', 'kid<prefix>', 'kid<prefix>_std'} of `fake` against real `domain` images."""
  scores = scorer.score(fake, real, domain)
  return {f'fid{prefix}': scores['fid'], f'kid{prefix}': scores['kid'],
          f'kid{prefix}_std': scores['kid_std']}
