"""The embedded demo set: photographs bundled in installed packages ↔ crops of The Starry Night.

It lets the demo and the tests train on real images with no download. Honest name: one-painting
style transfer. Only files that ship inside the wheels are used: scikit-image loaders that fetch
over the network (brain, cells3d, eagle, kidney, lily, skin, vortex, ...) are never called, and
files are opened by path, never through a loader, and without importing their packages (importing
scikit-learn alone costs 70 MB of memory).
"""

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from cyclegan_jax.data import image_files

PHOTOS = (  # (package, file inside it); packages that are not installed are left out.
    ('skimage', 'data/astronaut.png'),
    ('skimage', 'data/chelsea.png'),
    ('skimage', 'data/coffee.png'),
    ('skimage', 'data/rocket.jpg'),
    ('skimage', 'data/hubble_deep_field.jpg'),
    ('skimage', 'data/ihc.png'),  # immunohistochemistry
    ('skimage', 'data/retina.jpg'),
    ('skimage', 'data/motorcycle_left.png'),  # stereo_motorcycle
    ('sklearn', 'datasets/images/china.jpg'),
    ('sklearn', 'datasets/images/flower.jpg'),
    ('matplotlib', 'mpl-data/sample_data/grace_hopper.jpg'),
)
PAINTING = ('cyclegan_jax', 'assets/starry_night.jpg')
_DEMO_STREAM = 2  # Keeps demo crops' random streams apart from the pipeline's (input_pipeline).
_MIN_CROP_FRACTION = 0.5  # Crops span 50–100% of the picture's short side.


def bundled_files(domain: str) -> list[Path]:
  """The pictures behind demo domain 'a' (photos) or 'b' (the painting)."""
  found = []
  for package, path in PHOTOS if domain == 'a' else (PAINTING,):
    spec = importlib.util.find_spec(package)  # Locates the package without importing it.
    if spec is not None and spec.submodule_search_locations:
      file = Path(spec.submodule_search_locations[0], path)
      if file.is_file():
        found.append(file)
  if not found:
    raise FileNotFoundError(f'no demo pictures for domain {domain!r} in the installed packages; '
                            f'looked for {PHOTOS if domain == "a" else PAINTING}.')
  return found


def _shrunk(image: Image.Image, short_side: int) -> np.ndarray:
  """Smaller copy whose short side is at most `short_side`, so that each crop resizes fast."""
  scale = short_side / min(image.size)
  if scale < 1:
    image = image.resize((round(image.width * scale), round(image.height * scale)),
                         Image.Resampling.LANCZOS)
  return np.asarray(image)


def demo_domain(domain: str, size: int, crop_size: int, seed: int,
                split: str = 'train') -> image_files.Domain:
  """`size` square crops of the pictures, resized to crop_size; item i is fixed by (seed, split,
  i). The test split's crops are drawn apart from the train split's: held-out crops of the
  same pictures.

  Photos take turns (item i comes from photo i mod count); crop size and place are random.
  The pictures are decoded once and held in memory (a few MB); crops are cut on demand.
  """
  files = bundled_files(domain)
  pictures = [_shrunk(image_files.decode(f.read_bytes()), 2 * crop_size) for f in files]
  stream = [seed, _DEMO_STREAM, 'ab'.index(domain)] + ([] if split == 'train' else [1])

  def load(i: int) -> Image.Image:
    rng = np.random.default_rng(stream + [i])
    picture = pictures[i % len(pictures)]
    h, w = picture.shape[:2]
    side = int(min(h, w) * rng.uniform(_MIN_CROP_FRACTION, 1.0))
    y, x = rng.integers(h - side + 1), rng.integers(w - side + 1)
    crop = Image.fromarray(picture[y:y + side, x:x + side])
    return crop.resize((crop_size, crop_size), Image.Resampling.BICUBIC)

  def describe(i: int) -> str:
    return f'demo {split} {domain.upper()} item {i} (a crop of {files[i % len(files)].name})'

  names = ', '.join(f.name for f in files)
  return image_files.Domain(f'demo {split} domain {domain.upper()} ({names})', size, load,
                            describe)
