"""Building blocks shared by every model: norms, initialisers, activations and convolutions.

Convolutions use explicit PyTorch-style padding (never 'SAME' for even kernels), so shapes and
weights line up one-for-one with the reference CycleGAN code.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cyclegan_jax.models import conv_transpose, convolution, instance_norm

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

  Batch norm with `axis_name` (the train step's device axis) normalises with the statistics of
  the whole batch across devices, as the reference does with the same batch on one GPU; without
  it (outside the step), with those of the batch it is given.
  """
  kind: str = 'instance'
  gain: float = 0.02
  dtype: Any = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    _check_choice('norm', self.kind, NORMS)
    if self.kind == 'instance':
      # Two-pass variance, as torch: E[x²] − E[x]² loses ~2% when |mean| ≈ 200·std.
      return instance_norm.instance_norm(x.astype(self.dtype), 1e-5)
    if self.kind == 'batch':
      scale_init = lambda key, shape, dtype=jnp.float32: (
          1.0 + self.gain * jax.random.normal(key, shape, dtype))
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                          scale_init=scale_init, dtype=self.dtype, use_fast_variance=False,
                          axis_name=self.axis_name if train else None)(x)
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
    y = conv_transpose.conv_transpose(x.astype(self.dtype), kernel, self.stride, self.padding,
                                   self.output_padding)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


def _blur_down_1d(x: jax.Array, axis: int) -> jax.Array:
  """[1, 2, 1] / 4 at stride 2 along `axis`, after a reflect pad of 1."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  x = jnp.pad(x, pad, mode='reflect')
  n = (x.shape[axis] - 3) // 2 + 1
  tap = lambda k: jax.lax.slice_in_dim(x, k, k + 2 * n - 1, 2, axis)
  return (tap(0) + 2 * tap(1) + tap(2)) / 4


def blur_downsample(x: jax.Array) -> jax.Array:
  """CUT's antialiased `Downsample` (Zhang, "Making Convolutional Networks Shift-Invariant
  Again", 2019): NHWC x reflect-padded by 1, blurred by [1,2,1]⊗[1,2,1]/16 per channel, taken at
  stride 2. The filter is separable, so it runs as two 1-D passes with no conv and no
  parameters."""
  return _blur_down_1d(_blur_down_1d(x, 1), 2)


def _blur_up_1d(x: jax.Array, axis: int) -> jax.Array:
  """Doubles `axis`: output 2i is (x[i-1] + 3 x[i]) / 4 and 2i+1 is (3 x[i] + x[i+1]) / 4, with
  the edge items repeated: CUT's [1, 3, 3, 1] transposed blur after a replicate pad."""
  first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
  last = jax.lax.slice_in_dim(x, x.shape[axis] - 1, x.shape[axis], axis=axis)
  before = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)], axis)
  after = jnp.concatenate([jax.lax.slice_in_dim(x, 1, x.shape[axis], axis=axis), last], axis)
  even, odd = (before + 3 * x) / 4, (3 * x + after) / 4
  stacked = jnp.stack([even, odd], axis + 1)
  return stacked.reshape(x.shape[:axis] + (2 * x.shape[axis],) + x.shape[axis + 1:])


def blur_upsample(x: jax.Array) -> jax.Array:
  """CUT's antialiased `Upsample`: NHWC x at twice the height and width, the stride-2
  transposed blur [1,3,3,1]⊗[1,3,3,1]/16 per channel of the replicate-padded input, as two
  separable 1-D passes (no parameters)."""
  return _blur_up_1d(_blur_up_1d(x, 1), 2)


def count_params(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


class GeneratorOptions(nn.Module):
  """Options every generator shares; the concrete models add their own."""
  output_nc: int = 3
  ngf: int = 64
  norm: str = 'instance'
  init_type: str = 'normal'
  init_gain: float = 0.02
  dropout: float = 0.0
  activation: str = 'relu'
  leaky_slope: float = 0.2
  dtype: Any = jnp.float32
  batch_axis: str | None = None  # Batch norm's device axis, set by the train step (Norm).

  @property
  def use_bias(self) -> bool:
    return norm_uses_conv_bias(self.norm)

  def conv(self, features, kernel_size, **kwargs):
    kwargs.setdefault('use_bias', self.use_bias)
    return Conv(features, kernel_size, dtype=self.dtype,
                kernel_init=kernel_init(self.init_type, self.init_gain), **kwargs)

  def conv_transpose(self, features, **kwargs):
    kwargs.setdefault('use_bias', self.use_bias)
    return ConvTranspose(features, dtype=self.dtype,
                         kernel_init=kernel_init(self.init_type, self.init_gain), **kwargs)

  def shared_options(self) -> dict[str, Any]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(GeneratorOptions)
            if f.name not in ('parent', 'name')}

  def norm_layer(self):
    return Norm(self.norm, gain=self.init_gain, dtype=self.dtype, axis_name=self.batch_axis)

  def act(self):
    return activation(self.activation, self.leaky_slope)
