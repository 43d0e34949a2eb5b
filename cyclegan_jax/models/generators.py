"""Generators: the reference ResNet and U-Net image-to-image networks, and the DCGAN generator.

Flax modules used only through `init`/`apply`; they know nothing of devices, data or files.
"""

from collections.abc import Callable
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cyclegan_jax.models import convolution, instance_norm, layers
from cyclegan_jax.models.block_layout import BLOCKS
from cyclegan_jax.models.dropout import Dropout


class ResnetBlock(layers.GeneratorOptions):
  """x + (reflect-pad 1, conv3, norm, act, [dropout], reflect-pad 1, conv3, norm)(x)."""
  features: int = 256

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    y = self.conv(self.features, 3, padding=1, pad_mode='reflect')(x)
    y = self.act()(self.norm_layer()(y, train))
    if self.dropout > 0:
      y = Dropout(self.dropout)(y, train)
    y = self.conv(self.features, 3, padding=1, pad_mode='reflect')(y)
    y = self.norm_layer()(y, train)
    return x + y


class _BlockStep(layers.GeneratorOptions):
  """One step of ResnetGenerator's scan over its blocks: a ResnetBlock on the carry. Blocks from
  `stop` on pass it through (feature_layers ending among the blocks); with `emit`, each block's
  output is also a scan output."""
  features: int = 256
  train: bool = True
  keep: str = 'all'  # What the backward pass keeps of a block besides its input (the carry).
  stop: int | None = None
  emit: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, index: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    policies = {'nothing': jax.checkpoint_policies.nothing_saveable,
                'norms': jax.checkpoint_policies.save_only_these_names(instance_norm.SAVED)}
    block_type = (nn.remat(ResnetBlock, static_argnums=(2,), prevent_cse=False,
                           policy=policies[self.keep]) if self.keep in policies else ResnetBlock)
    block = block_type(features=self.features, name='block', **self.shared_options())
    if self.stop is None or self.is_initializing():
      x = block(x, self.train)
    else:
      x = nn.cond(index < self.stop, lambda m, x: m(x, self.train), lambda m, x: x, block, x)
    return x, (x if self.emit else None)


def _scanned_blocks(unroll: int):
  """One traced block body, the blocks' variables stacked on axis 0; `unroll` bodies per turn."""
  return nn.scan(_BlockStep, variable_axes={'params': 0, 'batch_stats': 0},
                 split_rngs={'params': True, 'dropout': True}, unroll=unroll)


class ResnetGenerator(layers.GeneratorOptions):
  """Encoder (c7s1-ngf, d2ngf, d4ngf: `n_downsampling` 2 halvings), `n_blocks` residual blocks,
  decoder (u2ngf, ungf, c7s1-3).

  With `antialias` (CUT's generator), each stride-2 conv becomes a stride-1 conv, norm, act and a
  blur-pool, and each transposed conv a blur upsampling, then a 3×3 conv, norm and act: the
  same parameters, without the checkerboard that strided transposed convs leave.

  The blocks are one `nn.scan`, their variables stacked under BLOCKS (block_layout.py); rolled
  (`unroll` False), one block body (`convolution.loop_body`) compiles for all, whose backward
  pass keeps each block's input and instance norms' outputs and recomputes the pads and acts
  between; with `remat`, it keeps the input only (less memory, more compute).

  The layers run as the entries of the reference's `nn.Sequential`, so `feature_layers` (CUT's
  nce_layers) index the same tensors as there: 0 is the reflect-padded input, 4 the first
  down conv's output, 12 the first residual block's (with antialias).

  With `reference_nc`, it also reads a style reference of that many channels beside its input
  (CycleGAN's model.style_reference): zeros where none is given, as in translation."""
  n_blocks: int = 9
  n_downsampling: int = 2
  antialias: bool = False
  remat: bool = False
  unroll: bool = False
  reference_nc: int = 0

  def _sequential(self, train: bool) -> tuple[list[Callable[[jax.Array], jax.Array]], ...]:
    """The Sequential's entries before and after its residual blocks."""
    reflect = lambda x: jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)), mode='reflect')
    norm_act = lambda: [functools.partial(self.norm_layer(), train=train), self.act()]
    encoder = [reflect, self.conv(self.ngf, 7), *norm_act()]
    mults = [2**i for i in range(1, self.n_downsampling + 1)]  # Of ngf, after each halving.
    for mult in mults:
      encoder += [self.conv(self.ngf * mult, 3, stride=1 if self.antialias else 2, padding=1),
                  *norm_act()] + ([layers.blur_downsample] if self.antialias else [])
    decoder = []
    for mult in (m // 2 for m in reversed(mults)):
      up = ([layers.blur_upsample, self.conv(self.ngf * mult, 3, padding=1)] if self.antialias
            else [self.conv_transpose(self.ngf * mult)])
      decoder += up + norm_act()
    return encoder, decoder + [reflect, self.conv(self.output_nc, 7, use_bias=True), jnp.tanh]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True, feature_layers: tuple[int, ...] = (),
               reference: jax.Array | None = None) -> jax.Array | list[jax.Array]:
    """The translated image; with `feature_layers`, the outputs of those Sequential entries
    instead, computed only as far as the last of them."""
    if self.reference_nc:
      x = jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (self.reference_nc,), x.dtype)
                           if reference is None else reference.astype(x.dtype)], -1)
    encoder, decoder = self._sequential(train)
    first, after = len(encoder), len(encoder) + self.n_blocks  # The blocks' entries.
    size = after + len(decoder)
    if feature_layers and not all(0 <= i < size for i in feature_layers):
      raise ValueError(f'feature layers {list(feature_layers)}: this generator has Sequential '
                       f'entries 0..{size - 1}.')
    last = max(feature_layers, default=size - 1)
    features = []

    def run(x, entries, start):
      for index, entry in enumerate(entries[:max(0, last + 1 - start)], start):
        x = entry(x)
        features.extend([x] if index in feature_layers else [])
      return x

    x = run(x.astype(self.dtype), encoder, 0)
    if last >= first:
      in_blocks = [i - first for i in range(first, after) if i in feature_layers]
      rolled = self.remat or not self.unroll  # Unrolled, XLA moved remat's recomputation.
      keep = 'nothing' if self.remat else 'norms' if rolled and self.norm == 'instance' else 'all'
      with convolution.loop_body(rolled):
        x, outputs = _scanned_blocks(1 if rolled else self.n_blocks)(
            features=x.shape[-1], train=train, keep=keep, emit=bool(in_blocks),
            stop=last + 1 - first if last < after - 1 else None, name=BLOCKS,
            **self.shared_options())(x, jnp.arange(self.n_blocks))
      features.extend(outputs[i] for i in in_blocks)
      x = run(x, decoder, after)
    return features if feature_layers else x.astype(jnp.float32)


class UnetGenerator(layers.GeneratorOptions):
  """The reference U-Net: `num_downs` stride-2 halvings with skip connections at every level.

  Built iteratively from the outside in, mirroring UnetSkipConnectionBlock: down path
  (LReLU 0.2, conv4 s2, norm), innermost without norm, up path (ReLU, convT4 s2, norm,
  dropout in the ngf*8 blocks), concatenating each level's input with its output.
  """
  num_downs: int = 8

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    ngf = self.ngf
    # (outer_nc, inner_nc, dropout) from outermost to innermost, as the reference builds them.
    inner = [(ngf * 8, ngf * 8, True)] * (self.num_downs - 5) + [(ngf * 8, ngf * 8, False)]
    levels = [(None, ngf, False), (ngf, ngf * 2, False), (ngf * 2, ngf * 4, False),
              (ngf * 4, ngf * 8, False)] + inner
    x = x.astype(self.dtype)
    skips = []
    for depth, (_, inner_nc, _) in enumerate(levels):
      innermost = depth == len(levels) - 1
      skips.append(x)
      if depth > 0:
        x = nn.leaky_relu(x, 0.2)
      x = self.conv(inner_nc, 4, stride=2, padding=1)(x)
      if 0 < depth and not innermost:
        x = self.norm_layer()(x, train)
    for depth in reversed(range(1, len(levels))):
      outer_nc, _, use_dropout = levels[depth]
      x = nn.relu(x)
      x = self.conv_transpose(outer_nc, kernel_size=4, padding=1, output_padding=0)(x)
      x = self.norm_layer()(x, train)
      if use_dropout and self.dropout > 0:
        x = Dropout(self.dropout)(x, train)
      x = jnp.concatenate([skips[depth], x], axis=-1)
    x = self.conv_transpose(self.output_nc, kernel_size=4, padding=1, output_padding=0,
                            use_bias=True)(nn.relu(x))
    return jnp.tanh(x).astype(jnp.float32)


def dcgan_upsamplings(image_size: int) -> int:
  """Stride-2 stages from 4×4 to `image_size` (a power of two ≥ 8), naming the value if not."""
  stages = int(image_size).bit_length() - 3
  if image_size < 8 or image_size != 4 << stages:
    raise ValueError(f'DCGAN image size {image_size} must be a power of two >= 8 (e.g. 32, 64).')
  return stages


class DCGANGenerator(layers.GeneratorOptions):
  """z [b, nz] → [b, size, size, output_nc] as the DCGAN reference: a projection to
  4×4×(ngf·2^(n−1)), then n transposed convs k4 s2 p1 halving the channels (norm, ReLU after
  all but the last), tanh. At 64² that is 4×4×8ngf → 8² → 16² → 32² → 64²×3.
  The first layer, a dense projection, is ConvTranspose2d(nz, c, 4, 1, 0) on a 1×1 input. With
  `grey` the image is the mean of its channels, repeated: fakes of grey data held as RGB
  (MNIST) cannot differ from the reals in colour, a cue that lets D win early (README, DCGAN)."""
  image_size: int = 64
  grey: bool = False

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    stages = dcgan_upsamplings(self.image_size)
    features = self.ngf * 2**(stages - 1)
    x = nn.Dense(4 * 4 * features, use_bias=False, dtype=self.dtype,
                 kernel_init=layers.kernel_init(self.init_type, self.init_gain))(
                     z.reshape(z.shape[0], -1).astype(self.dtype))
    x = self.act()(self.norm_layer()(x.reshape(-1, 4, 4, features), train))
    for _ in range(stages - 1):
      features //= 2
      x = self.conv_transpose(features, kernel_size=4, padding=1, output_padding=0)(x)
      x = self.act()(self.norm_layer()(x, train))
    x = self.conv_transpose(self.output_nc, kernel_size=4, padding=1, output_padding=0,
                            use_bias=False)(x)
    x = jnp.tanh(x).astype(jnp.float32)
    if self.grey:
      return jnp.repeat(jnp.mean(x, -1, keepdims=True), self.output_nc, -1)
    return x


GENERATORS = {
    'resnet_9blocks': (ResnetGenerator, {'n_blocks': 9}),
    'resnet_6blocks': (ResnetGenerator, {'n_blocks': 6}),
    'unet_256': (UnetGenerator, {'num_downs': 8}),
    'unet_128': (UnetGenerator, {'num_downs': 7}),
    'dcgan': (DCGANGenerator, {}),
}


def check_dropout(key: str, rate: float) -> None:
  """Outside [0, 1] a rate ran silently: every value kept and scaled by 1 / keep."""
  if not 0 <= rate <= 1:
    raise ValueError(f'{key}={rate}: expected a rate in [0, 1].')


def create_generator(model_config: ml_collections.ConfigDict, reference_nc: int = 0) -> nn.Module:
  """The generator named by `model_config.generator`, with the shared model options;
  `reference_nc`: the channels of a style reference it also reads (ResNets only)."""
  name = model_config.generator
  n_blocks = name[len('resnet_'):-len('blocks')]
  remat = model_config.get('remat', 'none')  # Configs saved by earlier versions have none.
  check_dropout('model.dropout', model_config.dropout)
  if remat not in ('none', 'blocks'):
    raise ValueError(f"model.remat={remat!r}: expected 'none' or 'blocks' (recompute blocks).")
  if name.startswith('resnet_') and name.endswith('blocks') and n_blocks.isdigit():
    cls, extra = ResnetGenerator, {'n_blocks': int(n_blocks), 'remat': remat == 'blocks',
        'antialias': model_config.antialias, 'unroll': model_config.get('unroll_blocks', False),
        'n_downsampling': model_config.get('n_downsampling', 2),  # Earlier configs: 2.
        'reference_nc': reference_nc}
    if extra['n_downsampling'] < 0:
      raise ValueError(f'model.n_downsampling={extra["n_downsampling"]}: expected 0 or more.')
  elif name not in GENERATORS:
    raise ValueError(f'unknown generator {name!r}; expected one of {", ".join(GENERATORS)} '
                     'or resnet_<n>blocks')
  elif model_config.antialias or remat != 'none' or reference_nc:
    key = ('antialias' if model_config.antialias else 'remat' if remat != 'none'
           else 'style_reference')
    raise ValueError(f'model.{key} is for ResNet generators (resnet_<n>blocks), not {name!r}.')
  else:
    cls, extra = GENERATORS[name]
    if name == 'dcgan':
      extra = {'image_size': model_config.image_size, 'grey': model_config.grey_output}
  return cls(output_nc=model_config.output_nc, ngf=model_config.ngf, norm=model_config.norm,
             init_type=model_config.init_type, init_gain=model_config.init_gain,
             dropout=model_config.dropout, activation=model_config.activation,
             leaky_slope=model_config.leaky_slope, dtype=jnp.dtype(model_config.dtype), **extra)


def size_multiple(generator: nn.Module) -> int:
  """The factor every input side must divide by: 2**halvings (4 for the reference ResNets)."""
  unet = isinstance(generator, UnetGenerator)
  return 2**(generator.num_downs if unet else generator.n_downsampling)


def min_size(generator: nn.Module) -> int:
  """The smallest side: a ResNet reflect-pads its blocks' maps by 1, which needs 2 pixels."""
  return size_multiple(generator) * (1 if isinstance(generator, UnetGenerator) else 2)
