"""Image files in a folder or a zip: finding domain folders, decoding to RGB, weeding out bad files.

Datasets arrive as user folders or zips (vangogh2photo.zip) with the odd broken file inside. This
module turns each file into an 8-bit RGB image, or into a one-line reason why it cannot, so the
pipeline can skip or refuse bad files by path at start-up instead of failing mid-training.
"""

from collections.abc import Callable, Sequence
import concurrent.futures
import dataclasses
import io
import os
from pathlib import Path
import threading
import zipfile

from absl import logging
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = ('.bmp', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp')
_EXIF_ORIENTATION = 0x0112
_CHECK_CHUNK = 256  # Files checked per round at start-up (one future each).
_SKIP_SUMMARY_LIMIT = 20  # Bad files named in the start-up log line; strict mode names them all.


class BadImageError(ValueError):
  """A file that cannot be used as a training image; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Domain:
  """A random-access collection of RGB images, whatever stores them (folder, zip, tfds, demo)."""
  name: str  # For log lines and errors, e.g. the folder path.
  size: int
  load: Callable[[int], Image.Image]  # Item i as an 8-bit RGB image.
  describe: Callable[[int], str]  # Item i's path, for error messages.

  def take(self, indices: Sequence[int]) -> 'Domain':
    """The items at `indices`, renumbered from 0 (a host's shard, a test subset)."""
    return Domain(self.name, len(indices), lambda i: self.load(indices[i]),
                  lambda i: self.describe(indices[i]))


def _hidden(part: str) -> bool:
  return part.startswith('.') or part == '__MACOSX'  # .DS_Store, ._x.jpg, macOS zip debris.


class DirectoryStore:
  """Files under a directory, named by their '/'-separated path relative to it."""

  def __init__(self, root: Path):
    self.root = root

  def is_folder(self, name: str) -> bool:
    return (self.root / name).is_dir()

  def top_folders(self) -> list[str]:
    return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not _hidden(p.name))

  def list_files(self, folder: str) -> list[str]:
    names = []
    for dirpath, dirnames, filenames in os.walk(self.root / folder):
      dirnames[:] = [d for d in dirnames if not _hidden(d)]
      rel = Path(dirpath).relative_to(self.root).as_posix()
      names.extend(f if rel == '.' else f'{rel}/{f}' for f in filenames if not _hidden(f))
    return sorted(names)

  def read(self, name: str) -> bytes:
    return (self.root / name).read_bytes()

  def describe(self, name: str) -> str:
    return str(self.root / name)


class ZipStore:
  """Files inside a zip; each thread reads through its own ZipFile (they are not thread-safe)."""

  def __init__(self, path: Path):
    self.path = path
    with zipfile.ZipFile(path) as archive:
      self._names = sorted(n for n in archive.namelist()
                           if not n.endswith('/') and not any(map(_hidden, n.split('/'))))
    self._folders = {n.rsplit('/', k)[0] for n in self._names for k in range(1, n.count('/') + 1)}
    self._local = threading.local()

  def is_folder(self, name: str) -> bool:
    return name in self._folders

  def top_folders(self) -> list[str]:
    return sorted(f for f in self._folders if '/' not in f)

  def list_files(self, folder: str) -> list[str]:
    return [n for n in self._names if not folder or n.startswith(folder + '/')]

  def read(self, name: str) -> bytes:
    if not hasattr(self._local, 'archive'):
      self._local.archive = zipfile.ZipFile(self.path)
    return self._local.archive.read(name)

  def describe(self, name: str) -> str:
    return f'{self.path}/{name}' if name else str(self.path)


Store = DirectoryStore | ZipStore


def open_store(path: str) -> Store:
  """The folder or zip at `path` (config.data.path)."""
  if not path:
    raise ValueError('data.path is empty: set --config.data.path to a folder or a .zip holding '
                     'the domain folders (e.g. trainA/ and trainB/).')
  root = Path(path).expanduser()
  if root.is_dir():
    return DirectoryStore(root)
  if not root.exists():
    raise FileNotFoundError(f'data.path {root} does not exist (expected a folder or a .zip).')
  if zipfile.is_zipfile(root):
    return ZipStore(root)
  raise ValueError(f'data.path {root} is neither a folder nor a zip file.')


def find_folder(store: Store, name: str) -> str | None:
  """`name` at the top of the store or one level down (vangogh2photo.zip: vangogh2photo/trainA)."""
  if store.is_folder(name):
    return name
  found = [f'{top}/{name}' for top in store.top_folders() if store.is_folder(f'{top}/{name}')]
  if len(found) > 1:
    raise ValueError(f'{name} is ambiguous in {store.describe("")}: found '
                     f'{", ".join(found)}; point data.path at one of their parents.')
  return found[0] if found else None


def to_rgb(image: Image.Image) -> Image.Image:
  """8-bit RGB like the reference's `.convert('RGB')`, but 16-bit samples scaled, not clipped."""
  if image.mode.startswith('I'):  # 'I;16*' (and 'I' from older PIL) hold 16-bit samples.
    wide = np.asarray(image).astype(np.float32)
    image = Image.fromarray(np.round(np.clip(wide, 0, 65535) / 257).astype(np.uint8))
  elif image.mode == 'P' and 'transparency' in image.info:
    image = image.convert('RGBA')  # Avoids PIL's warning; the alpha is then dropped as usual.
  return image.convert('RGB')


def _reason(error: Exception, data: bytes) -> str:
  if isinstance(error, UnidentifiedImageError):
    return f'not an image: unknown format, starts with {data[:12]!r}'
  if isinstance(error, OSError) and 'truncated' in str(error):
    return 'truncated'
  return f'unreadable: {type(error).__name__}: {error}'


def decode(data: bytes) -> Image.Image:
  """File bytes → upright (EXIF orientation applied) 8-bit RGB image, or BadImageError."""
  try:
    return to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
  except Exception as e:  # PIL raises many types for bad data; all mean "unusable file".
    raise BadImageError(_reason(e, data)) from e


def probe(data: bytes) -> tuple[int, int]:
  """Upright (width, height) after decoding every byte, so truncation shows; JPEGs at 1/8 scale."""
  try:
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # Rotated by 90°.
      width, height = height, width
    image.draft(None, (1, 1))  # JPEG: entropy-decode everything, skip most of the IDCT.
    image.load()
  except Exception as e:
    raise BadImageError(_reason(e, data)) from e
  return width, height


def _problem(store: Store, name: str, size_problem: Callable[[int, int], str | None]) -> str | None:
  try:
    return size_problem(*probe(store.read(name)))
  except (BadImageError, OSError, zipfile.BadZipFile) as e:  # Unreadable bytes, or bad CRC.
    return str(e)


def folder_domain(store: Store, folder_name: str, size_problem: Callable[[int, int], str | None],
                  strict: bool, num_workers: int) -> Domain:
  """The usable images of one domain folder, checked up front (every file fully decoded once).

  Bad files (unreadable, truncated, not images, too small per `size_problem`) are dropped with one
  log line naming them, or with `strict` raise a ValueError naming them all.
  Files with other extensions are ignored. Raises if the folder is missing or has no usable image.
  """
  expected = ', '.join(IMAGE_EXTENSIONS)
  folder = find_folder(store, folder_name)
  if folder is None:
    raise FileNotFoundError(f'no folder {folder_name} (nor */{folder_name}) in '
                            f'{store.describe("")}; expected {folder_name}/ holding {expected} '
                            'images.')
  where = store.describe(folder)
  names = [n for n in store.list_files(folder) if n.lower().endswith(IMAGE_EXTENSIONS)]
  if not names:
    raise FileNotFoundError(f'no image files in {where} (looked recursively for {expected}).')
  problems = []
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    for start in range(0, len(names), _CHECK_CHUNK):  # Bounded: memory must not grow with files.
      chunk = names[start:start + _CHECK_CHUNK]
      problems.extend(pool.map(lambda n: _problem(store, n, size_problem), chunk))
  bad = [(n, p) for n, p in zip(names, problems) if p is not None]
  if bad and strict:
    raise ValueError(f'{len(bad)} of {len(names)} files in {where} are unusable (data.strict): '
                     + '; '.join(f'{store.describe(n)} ({p})' for n, p in bad))
  good = [n for n, p in zip(names, problems) if p is None]
  if not good:
    raise ValueError(f'no usable images in {where}: {skip_summary(where, folder, len(names), bad)}')
  if bad:
    logging.info(skip_summary(where, folder, len(names), bad))

  def load(i: int) -> Image.Image:
    return decode(store.read(good[i]))

  return Domain(where, len(good), load, lambda i: store.describe(good[i]))


def skip_summary(where: str, folder: str, total: int, bad: list[tuple[str, str]]) -> str:
  """'skipped 2 of 9 files in <where>: a.jpg (truncated), b.png (8×8 is smaller than crop 32)'."""
  listed = ', '.join(f'{n[len(folder) + 1:]} ({p})' for n, p in bad[:_SKIP_SUMMARY_LIMIT])
  more = f', and {len(bad) - _SKIP_SUMMARY_LIMIT} more' if len(bad) > _SKIP_SUMMARY_LIMIT else ''
  return f'skipped {len(bad)} of {total} files in {where}: {listed}{more}'
