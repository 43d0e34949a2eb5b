"""Export a workdir's generator as a TensorFlow SavedModel, to serve it where JAX is not.

    python -m cyclegan_jax.export --workdir=W --direction=AtoB --out=DIR

(the same as `python -m cyclegan_jax.main --mode=export --out=DIR ...`). The generator goes
through jax2tf with its weights as TF variables and symbolic batch, height and width, so one
SavedModel serves every batch and image size: `tf.saved_model.load(DIR)(images)` maps uint8
[b, H, W, C] images to uint8 [b, H, W, C'], scaled to [-1, 1] and back as `translate` does; H and
W are multiples of the generator's total stride (4; 2^num_downs for the U-Nets) from twice that
for the ResNets. A family that draws images from latents (DCGAN) exports with
`--direction=sample`: float32 [b, model.nz] → uint8 [b, S, S, C], with batch norm as its sample
grids use it (each call's batch's own statistics). Convs are XLA's own (conv_impl 'xla'), so the
model holds nothing tuned for this machine, and it is lowered for CPU, CUDA and TPU.
"""

import argparse
from collections.abc import Callable
import dataclasses
import os
from pathlib import Path
import sys
from typing import Any

# As main.py: TensorFlow's line about its oneDNN kernels, printed at import, stays off stderr.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import logging  # noqa: E402  (after the environment TensorFlow reads)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.experimental import jax2tf  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cyclegan_jax import checkpointing, faults, translate
from cyclegan_jax.families import base
from cyclegan_jax.models import convolution, generators
from cyclegan_jax.progress import Progress

SAMPLE = 'sample'
DIRECTIONS = translate.DIRECTIONS + (SAMPLE,)
PLATFORMS = ('cpu', 'cuda', 'tpu')


@dataclasses.dataclass(frozen=True)
class Servable:
  """A generator as one pure JAX function of (weights, input batch) → uint8 images, and the
  inputs it takes, as jax2tf needs them."""
  apply: Callable[[Any, jax.Array], jax.Array]
  weights: Any  # (params, batch_stats) of the generator.
  input_spec: tf.TensorSpec
  sides: tuple[int, int] | None  # Images: (multiple, least) of H and W; latents: None.
  usage: str  # One line on what it takes and returns.


def to_uint8(images: jax.Array) -> jax.Array:
  """visualize.to_uint8 (what translate writes) in jax: [-1, 1] → round((x + 1)·127.5)."""
  return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def image_servable(module, params: Any, batch_stats: Any, channels: int) -> Servable:
  """An image-to-image generator on uint8 images of any size that its stride allows."""
  multiple, least = generators.size_multiple(module), generators.min_size(module)

  def apply(weights, images):
    with convolution.using('xla'):
      y = module.apply(base.variables(*weights), images.astype(jnp.float32) / 127.5 - 1.0,
                       train=False)
    return to_uint8(y)

  spec = tf.TensorSpec([None, None, None, channels], tf.uint8, name='images')
  usage = (f'uint8 [b, H, W, {channels}] → uint8 images of the same size; H and W multiples of '
           f'{multiple}, at least {least}')
  return Servable(apply, (params, batch_stats), spec, (multiple, least), usage)


def latent_servable(module, params: Any, batch_stats: Any, nz: int,
                    train_mode: bool) -> Servable:
  """A generator of uint8 images from float32 latents."""
  def apply(weights, z):
    with convolution.using('xla'):
      y = (base.apply_train(module, *weights, z)[0] if train_mode else
           module.apply(base.variables(*weights), z, train=False))
    return to_uint8(y)

  spec = tf.TensorSpec([None, nz], tf.float32, name='latents')
  return Servable(apply, (params, batch_stats), spec, None,
                  f'float32 [b, {nz}] latents → uint8 [b, H, W, C] images')


def servable(loaded: checkpointing.Loaded, direction: str, workdir: str) -> Servable:
  """The generator of a loaded checkpoint that serves `direction`: a translator's, or with
  'sample' the family's latent generator."""
  family, latent = loaded.family, loaded.family.latent_generator
  offered = [*family.translators, *([SAMPLE] if latent else [])]
  if direction not in offered:
    raise ValueError(f'{workdir} holds a {loaded.config.family} model, which exports '
                     f'{", ".join(offered) or "nothing"}, not {direction}.')
  if direction == SAMPLE:
    name = latent.name
    return latent_servable(loaded.models.generators[name], loaded.params[name],
                           loaded.batch_stats[name], loaded.config.model.nz, latent.train_mode)
  name, channels = translate.translator_generator(loaded, direction)
  return image_servable(loaded.models.generators[name], loaded.params[name],
                        loaded.batch_stats[name], channels)


def _checked_sides(x: tf.Tensor, multiple: int, least: int) -> tf.Tensor:
  """x, once its H and W are found to fit: XLA's own error for a bad size is a shape
  refinement failure deep in the model."""
  h, w = tf.shape(x)[1], tf.shape(x)[2]
  fits = tf.reduce_all([h % multiple == 0, w % multiple == 0, h >= least, w >= least])
  check = tf.debugging.Assert(fits, [f'image height and width must be multiples of {multiple}, '
                                     f'at least {least}; got', h, w])
  with tf.control_dependencies([check]):
    return tf.identity(x)


def save(served: Servable, out: str | Path) -> None:
  """Writes `served` as a SavedModel: callable, and with a serving_default signature
  ({'images': ...} out) for TF Serving."""
  shape, constraints = '(b, _)', ()
  if served.sides:
    multiple, least = served.sides
    shape = f'(b, {multiple}*h, {multiple}*w, _)'
    constraints = (f'h >= {least // multiple}', f'w >= {least // multiple}')
  converted = jax2tf.convert(served.apply, polymorphic_shapes=[None, shape],
                             polymorphic_constraints=constraints, with_gradient=False,
                             native_serialization_platforms=PLATFORMS)
  module = tf.Module()
  module.weights = tf.nest.map_structure(
      lambda x: tf.Variable(np.asarray(x), trainable=False), served.weights)

  def call(x):
    return converted(module.weights, _checked_sides(x, *served.sides) if served.sides else x)

  module.__call__ = tf.function(call, autograph=False, input_signature=[served.input_spec])
  serving = tf.function(lambda x: {'images': module.__call__(x)}, autograph=False,
                        input_signature=[served.input_spec])
  tf.saved_model.save(module, str(out), signatures={'serving_default': serving})


def export(workdir: str, direction: str, out: str, step: int | None = None) -> str:
  """Exports the latest (or given) checkpoint's generator for `direction` to `out` (a new or
  empty folder); returns a line saying what was written."""
  if direction not in DIRECTIONS:
    raise ValueError(f'unknown direction {direction!r}; expected one of {", ".join(DIRECTIONS)}')
  if Path(out).exists() and any(Path(out).iterdir()):
    raise FileExistsError(f'{out} is not empty; choose a new --out (or remove it)')
  progress = Progress(f'Export ({direction}: load, then write)', 2, 'phases',
                      every_s=0)  # A line per phase: jax2tf and TF take a while.
  loaded = checkpointing.load(workdir, step=step)
  progress.update(1)
  served = servable(loaded, direction, workdir)
  save(served, out)
  progress.update(2)
  return (f'wrote a SavedModel of {workdir}\'s {direction} generator (step {loaded.step}) to '
          f'{out}: tf.saved_model.load({out!r})(x) maps {served.usage}')


def run_command(workdir: str, direction: str, out: str) -> None:
  """`export` for a command line: a bad workdir, direction or folder ends in one line, not a
  traceback."""
  tf.config.set_visible_devices([], 'GPU')  # TensorFlow must not take the accelerators.
  try:
    logging.info(export(workdir, direction, out))
  except (checkpointing.NoReadableCheckpointError, ValueError, OSError) as e:
    sys.exit(f'error: {e}')


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='a trained (or converted) workdir')
  parser.add_argument('--direction', choices=DIRECTIONS, default='AtoB',
                      help='AtoB (CycleGAN: G_AB; CUT: G), BtoA (G_BA) or sample (DCGAN: G)')
  parser.add_argument('--out', '--output', dest='out', required=True,
                      help='a new folder for the SavedModel')
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  run_command(args.workdir, args.direction, args.out)


if __name__ == '__main__':
  faults.quiet_library_logs()  # The process's logging, so not in main(), which tests call.
  main()
