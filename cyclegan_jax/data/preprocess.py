"""The reference CycleGAN image transforms (`get_transform` in its base_dataset.py), in PIL.

Train: resize or scale, random crop, random flip; test: the same with a centre crop and no flip.
Every mode ends in a crop to crop_size, because a batch needs one shape: for 'scale_width' and
'none', which the reference leaves uncropped, that crop is the only change from the reference.
Pixels end up float32 in [-1, 1].
"""

import numpy as np
from PIL import Image

MODES = ('resize_and_crop', 'crop', 'scale_width', 'scale_width_and_crop', 'none')
_NONE_MULTIPLE = 4  # 'none' rounds sizes to a multiple of 4, as the reference does.


def check_config(data) -> None:
  """Fails at start-up on settings no image could satisfy."""
  if data.preprocess not in MODES:
    raise ValueError(f'data.preprocess={data.preprocess!r}; expected one of {", ".join(MODES)}.')
  if data.crop_size <= 0:
    raise ValueError(f'data.crop_size={data.crop_size} must be positive.')
  if data.preprocess != 'crop' and data.preprocess != 'none' and data.load_size < data.crop_size:
    raise ValueError(f'data.load_size={data.load_size} is smaller than data.crop_size='
                     f'{data.crop_size}; preprocess {data.preprocess!r} crops after resizing.')


def _round_to_multiple(size: int) -> int:
  return max(_NONE_MULTIPLE, int(round(size / _NONE_MULTIPLE)) * _NONE_MULTIPLE)


def size_problem(width: int, height: int, data) -> str | None:
  """Why an image of this size cannot give a crop_size crop under data.preprocess, else None."""
  if data.preprocess == 'crop':
    usable = width, height
  elif data.preprocess == 'none':
    usable = _round_to_multiple(width), _round_to_multiple(height)
  else:  # Resized first: any size works.
    return None
  if min(usable) < data.crop_size:
    return f'{width}×{height} is smaller than crop {data.crop_size}'
  return None


def _scale_width(image: Image.Image, width: int, min_height: int) -> Image.Image:
  w, h = image.size
  if w == width and h >= min_height:
    return image
  return image.resize((width, int(max(width * h / w, min_height))), Image.Resampling.BICUBIC)


def _resized(image: Image.Image, data) -> Image.Image:
  if data.preprocess == 'resize_and_crop':
    return image.resize((data.load_size, data.load_size), Image.Resampling.BICUBIC)
  if data.preprocess in ('scale_width', 'scale_width_and_crop'):
    return _scale_width(image, data.load_size, data.crop_size)
  if data.preprocess == 'none':
    size = tuple(map(_round_to_multiple, image.size))
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)
  return image  # 'crop'


def transform(image: Image.Image, data, rng: np.random.Generator | None) -> np.ndarray:
  """RGB image → float32 [crop, crop, 3] in [-1, 1]; `rng=None` gives the fixed test view."""
  image = _resized(image, data)
  w, h, size = *image.size, data.crop_size
  if min(w, h) < size:
    raise ValueError(f'{w}×{h} is smaller than crop {size}')
  if rng is None:
    x, y = int(round((w - size) / 2)), int(round((h - size) / 2))
  else:
    x, y = int(rng.integers(w - size + 1)), int(rng.integers(h - size + 1))
  image = image.crop((x, y, x + size, y + size))
  if rng is not None and data.flip and rng.random() < 0.5:
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.asarray(image, np.float32) / 127.5 - 1.0
