"""Discriminators: PatchGAN (n_layers), PixelGAN, the small 4-conv digit critic and DCGAN's.

Every discriminator returns *logits*; the losses module applies any sigmoid, so the vanilla
GAN loss stays finite at extreme outputs.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cyclegan_jax.models import layers


class _Critic(nn.Module):
  """Options every discriminator shares."""
  ndf: int = 64
  norm: str = 'instance'
  init_type: str = 'normal'
  init_gain: float = 0.02
  dtype: Any = jnp.float32
  batch_axis: str | None = None  # Batch norm's device axis, set by the train step (layers.Norm).

  def conv(self, features, kernel_size, stride, padding, use_bias=None):
    use_bias = layers.norm_uses_conv_bias(self.norm) if use_bias is None else use_bias
    return layers.Conv(features, kernel_size, stride=stride, padding=padding, use_bias=use_bias,
                       kernel_init=layers.kernel_init(self.init_type, self.init_gain),
                       dtype=self.dtype)

  def norm_act(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.Norm(self.norm, gain=self.init_gain, dtype=self.dtype,
                    axis_name=self.batch_axis)(x, train)
    return nn.leaky_relu(x, 0.2)


class PatchDiscriminator(_Critic):
  """The PatchGAN: n_layers=3 is the 70×70 `basic` D (256² → 30×30 logits).

  With `antialias` (CUT's D) each stride-2 conv runs at stride 1 and is followed, after its
  norm and activation, by a blur-pool of stride 2: the same parameters and the same 30×30
  logits at 256².
  """
  n_layers: int = 3
  antialias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    stride = 1 if self.antialias else 2
    blur = layers.blur_downsample if self.antialias else lambda y: y
    x = x.astype(self.dtype)
    x = blur(nn.leaky_relu(self.conv(self.ndf, 4, stride, 1, use_bias=True)(x), 0.2))
    for n in range(1, self.n_layers):
      x = blur(self.norm_act(self.conv(self.ndf * min(2**n, 8), 4, stride, 1)(x), train))
    x = self.norm_act(self.conv(self.ndf * min(2**self.n_layers, 8), 4, 1, 1)(x), train)
    return self.conv(1, 4, 1, 1, use_bias=True)(x).astype(jnp.float32)


class PixelDiscriminator(_Critic):
  """1×1 PixelGAN: judges every pixel on its own (colour statistics only)."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    x = x.astype(self.dtype)
    x = nn.leaky_relu(self.conv(self.ndf, 1, 1, 0, use_bias=True)(x), 0.2)
    x = self.norm_act(self.conv(self.ndf * 2, 1, 1, 0)(x), train)
    return self.conv(1, 1, 1, 0)(x).astype(jnp.float32)


class Conv4Discriminator(_Critic):
  """Seed S0's digit critic for 32×32: three conv4 s2 (norm after the first), conv4 to 1×1.

  The seed ended in a sigmoid; here the sigmoid lives in the loss (`vanilla` = BCE on logits).
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    x = x.astype(self.dtype)
    x = nn.leaky_relu(self.conv(self.ndf, 4, 2, 1, use_bias=True)(x), 0.2)
    x = self.norm_act(self.conv(self.ndf * 2, 4, 2, 1)(x), train)
    x = self.norm_act(self.conv(self.ndf * 4, 4, 2, 1)(x), train)
    return self.conv(1, x.shape[1], 1, 0, use_bias=True)(x).astype(jnp.float32)


class DCGANDiscriminator(_Critic):
  """The DCGAN reference D: conv4 s2 p1 + LReLU 0.2 (no norm on the first), doubling the
  channels down to 4×4, then a conv4 (no padding) to one logit per image, [b, 1, 1, 1].

  Any power-of-two size ≥ 8 works (64²: ndf, 2, 4, 8ndf at 32², 16², 8², 4²). No conv has a
  bias, as in the reference.
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    size = x.shape[1]
    if size < 8 or size & (size - 1) or x.shape[2] != size:
      raise ValueError(f'DCGAN discriminator input {x.shape[1]}×{x.shape[2]} must be square '
                       'with a power-of-two side >= 8 (e.g. 32, 64).')
    x = nn.leaky_relu(self.conv(self.ndf, 4, 2, 1, use_bias=False)(x.astype(self.dtype)), 0.2)
    features = self.ndf
    while x.shape[1] > 4:
      features *= 2
      x = self.norm_act(self.conv(features, 4, 2, 1, use_bias=False)(x), train)
    return self.conv(1, 4, 1, 0, use_bias=False)(x).astype(jnp.float32)


DISCRIMINATORS = ('basic', 'n_layers', 'pixel', 'conv4', 'dcgan')


def create_discriminator(model_config: ml_collections.ConfigDict) -> nn.Module:
  """Builds the discriminator named by `model_config.discriminator`."""
  name = model_config.discriminator
  common = dict(ndf=model_config.ndf, norm=model_config.norm, init_type=model_config.init_type,
                init_gain=model_config.init_gain, dtype=jnp.dtype(model_config.dtype))
  if name in ('basic', 'n_layers'):
    return PatchDiscriminator(n_layers=3 if name == 'basic' else model_config.n_layers_d,
                              antialias=model_config.antialias_d, **common)
  if model_config.antialias_d:
    raise ValueError(f'model.antialias_d is for PatchGAN discriminators (basic, n_layers), not '
                     f'{name!r}.')
  if name == 'pixel':
    return PixelDiscriminator(**common)
  if name == 'conv4':
    return Conv4Discriminator(**common)
  if name == 'dcgan':
    return DCGANDiscriminator(**common)
  raise ValueError(f'unknown discriminator {name!r}; expected one of {", ".join(DISCRIMINATORS)}')
