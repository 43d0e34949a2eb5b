"""Building blocks shared by every model: norms, initialisers, activations and convolutions.

Convolutions use explicit PyTorch-style padding (never 'SAME' for even kernels), so shapes and
weights line up one-for-one with the reference CycleGAN code.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cyclegan_jax.models import convolution

Initializer = Callable[..., jax.Array]

NORMS = ('instance', 'batch', 'none')
INIT_TYPES = ('normal', 'xavier', 'kaiming', 'orthogonal')
ACTIVATIONS = ('relu', 'leaky_relu')


def _check_choice(kind: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f'unknown {kind} {value!r}; expected one of {", ".join(choices)}')


def kernel_init(init_type: str = 'normal', gain: float = 0.02) -> Initializer:
  """Conv kernel initialiser with the reference `init_weights` semantics (biases start at 0)."""
  _check_choice('init_type', init_type, INIT_TYPES)
  if init_type == 'normal':
    return nn.initializers.normal(stddev=gain)
  if init_type == 'xavier':  # torch xavier_normal_: std = gain * sqrt(2 / (fan_in + fan_out)).
    return nn.initializers.variance_scaling(gain**2, 'fan_avg', 'normal')
  if init_type == 'kaiming':  # torch kaiming_normal_(a=0, mode='fan_in').
    return nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')
  return nn.initializers.orthogonal(scale=gain)


def norm_uses_conv_bias(norm: str) -> bool:
  """The reference's rule, kept so parameter counts and imported weights match: convs carry a
  bias only before instance norm (a bias before batch norm is re-centred away)."""
  _check_choice('norm', norm, NORMS)
  return norm == 'instance'


class Norm(nn.Module):
  """`instance` (no affine, eps 1e-5, as torch InstanceNorm2d), `batch` or `none`.

  Batch norm normalises with each device's own batch statistics, as the reference does on one
  GPU; the train step pmeans the running averages so that every replica keeps the same ones.
  """
  kind: str = 'instance'
  gain: float = 0.02
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    _check_choice('norm', self.kind, NORMS)
    if self.kind == 'instance':
      # Two-pass variance, as torch: E[x²] − E[x]² loses ~2% when |mean| ≈ 200·std.
      return nn.InstanceNorm(epsilon=1e-5, use_bias=False, use_scale=False, dtype=self.dtype,
                             use_fast_variance=False)(x)
    if self.kind == 'batch':
      scale_init = lambda key, shape, dtype=jnp.float32: (
          1.0 + self.gain * jax.random.normal(key, shape, dtype))
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                          scale_init=scale_init, dtype=self.dtype, use_fast_variance=False)(x)
    return x


def activation(name: str, negative_slope: float = 0.2) -> Callable[[jax.Array], jax.Array]:
  _check_choice('activation', name, ACTIVATIONS)
  if name == 'relu':
    return nn.relu
  return functools.partial(nn.leaky_relu, negative_slope=negative_slope)


def torch_padding(pad: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((pad, pad), (pad, pad))


class Conv(nn.Module):
  """A 2-D convolution with symmetric zero or reflect padding, as torch's Conv2d / ReflectionPad2d.

  It is computed by the process's conv impl (`convolution.current_impl`); the parameters are the
  same for every impl.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  pad_mode: str = 'zeros'  # zeros | reflect
  use_bias: bool = True
  # Not named `init`, which would shadow `Module.init`.
  kernel_init: Initializer = nn.initializers.normal(stddev=0.02)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _check_choice('pad_mode', self.pad_mode, ('zeros', 'reflect'))
    padding = torch_padding(self.padding)
    if self.pad_mode == 'reflect' and self.padding:
      x = jnp.pad(x, ((0, 0),) + padding + ((0, 0),), mode='reflect')
      padding = 'VALID'
    return nn.Conv(self.features, (self.kernel_size, self.kernel_size),
                   strides=(self.stride, self.stride), padding=padding, use_bias=self.use_bias,
                   kernel_init=self.kernel_init, bias_init=nn.initializers.zeros,
                   dtype=self.dtype, conv_general_dilated=convolution.conv_general_dilated)(x)


class ConvTranspose(nn.Module):
  """torch ConvTranspose2d(k, s, p, output_padding): k3 s2 p1 op1 doubles the size exactly
  like the reference. The kernel is HWIO and flipped relative to torch's (I, O, kH, kW)."""
  features: int
  kernel_size: int = 3
  stride: int = 2
  padding: int = 1
  output_padding: int = 1
  use_bias: bool = True
  kernel_init: Initializer = nn.initializers.normal(stddev=0.02)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init,
                        (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
    y = convolution.conv_transpose(x.astype(self.dtype), kernel, self.stride, self.padding,
                                   self.output_padding)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


def count_params(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
