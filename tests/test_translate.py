"""translate.py: a workdir's generator on a file, a folder or a zip, each image at its own size,
with unreadable files named and skipped; through the command line users run."""

import dataclasses
import importlib
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from cyclegan_jax import convert, translate
from cyclegan_jax.models import generators

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A fresh configs/test.py workdir at step 0 (ResNet, ngf 8)."""
  path = tmp_path_factory.mktemp('translate') / 'workdir'
  convert.write_workdir(importlib.import_module('configs.test').get_config(), str(path), {})
  return path


def photo(height, width, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def identity(multiple, seen):
  """A Translator that records its input and returns it unchanged."""
  def apply(x):
    seen.append(x)
    return x
  return translate.Translator(apply, multiple, step=0)


def test_padding_reflects_to_the_multiple_and_crops_back():
  image, seen = photo(5, 6), []
  out = translate.translate_image(identity(4, seen), image)
  np.testing.assert_array_equal(out, image)  # uint8 → [-1, 1] → uint8 is exact.
  scaled = image.astype(np.float32) / 127.5 - 1
  np.testing.assert_array_equal(seen[0], np.pad(scaled, ((0, 3), (0, 2), (0, 0)), 'reflect'))
  translate.translate_image(identity(4, seen), photo(8, 12))
  assert seen[1].shape == (8, 12, 3)  # Already a multiple: no padding.


def test_greyscale_models_read_and_write_one_channel(tmp_path):
  Image.fromarray(photo(9, 7)).save(tmp_path / 'rgb.png')
  seen = []
  greyscale = dataclasses.replace(identity(4, seen), channels=1)
  report = translate.translate_path(greyscale, str(tmp_path / 'rgb.png'), tmp_path / 'out')
  assert seen[0].shape == (12, 8, 1)
  written = Image.open(report.written[0])
  assert written.mode == 'L' and written.size == (7, 9)
  np.testing.assert_array_equal(np.asarray(written),
                                np.asarray(Image.open(tmp_path / 'rgb.png').convert('L')))


def test_size_multiple_is_the_generators_total_stride():
  assert generators.size_multiple(generators.ResnetGenerator(n_blocks=2)) == 4
  assert generators.size_multiple(generators.UnetGenerator(num_downs=7)) == 128


@pytest.mark.slow
def test_command_keeps_each_size_and_names_bad_files(workdir, tmp_path):
  photos = tmp_path / 'photos'
  (photos / 'nested').mkdir(parents=True)
  Image.fromarray(photo(451, 300)).save(photos / 'tall.jpg')
  Image.fromarray(photo(30, 41, seed=1)).save(photos / 'nested' / 'small.png')
  (photos / 'broken.jpg').write_bytes(b'\xff\xd8 this is no jpeg')
  (photos / 'notes.txt').write_text('not an image, ignored')
  out = tmp_path / 'out'
  env = {**os.environ, 'PYTHONPATH': str(ROOT), 'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run(
      [sys.executable, '-m', 'cyclegan_jax.translate', f'--workdir={workdir}',
       '--direction=BtoA', f'--input={photos}', f'--output={out}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(p.relative_to(out).as_posix() for p in out.rglob('*.png')) == [
      'nested/small.png', 'tall.png']
  assert Image.open(out / 'tall.png').size == (300, 451)
  assert Image.open(out / 'nested' / 'small.png').size == (41, 30)
  log = result.stderr
  assert 'Restoring checkpoint' not in log and 'CheckpointManager' not in log  # orbax's chatter.
  assert f'skipped {photos / "broken.jpg"}: not an image' in log
  assert (f'wrote 2 PNGs to {out}; skipped 1 unreadable files: {photos / "broken.jpg"} '
          '(not an image') in log


def test_zip_and_single_file_inputs_match(workdir, tmp_path):
  image = photo(13, 22, seed=3)
  Image.fromarray(image).save(tmp_path / 'one.png')
  with zipfile.ZipFile(tmp_path / 'photos.zip', 'w') as archive:
    archive.write(tmp_path / 'one.png', 'photos/one.png')
    archive.writestr('photos/cut.png', (tmp_path / 'one.png').read_bytes()[:60])
  translator = translate.load_translator(str(workdir), 'AtoB')
  from_zip = translate.translate_path(translator, str(tmp_path / 'photos.zip'), tmp_path / 'z')
  from_file = translate.translate_path(translator, str(tmp_path / 'one.png'), tmp_path / 'f')
  assert from_zip.written == [tmp_path / 'z' / 'photos' / 'one.png']
  assert from_zip.skipped == [(f'{tmp_path / "photos.zip"}/photos/cut.png', 'truncated')]
  assert from_file.written == [tmp_path / 'f' / 'one.png'] and not from_file.skipped
  a, b = (np.asarray(Image.open(p)) for p in from_zip.written + from_file.written)
  assert a.shape == (13, 22, 3)
  np.testing.assert_array_equal(a, b)
  expected = translate.translate_image(translator, image)
  np.testing.assert_array_equal(a, expected)
  assert len(np.unique(a)) > 10  # A real translation, not a constant image.


def test_clashing_names_keep_their_suffix():
  names = ['a.jpg', 'a.png', 'sub/b.jpg', 'c.tif']
  assert translate._output_names(names) == [
      pathlib.Path(p) for p in ('a.jpg.png', 'a.png.png', 'sub/b.png', 'c.png')]


def test_errors_name_what_is_wrong(tmp_path):
  with pytest.raises(FileNotFoundError, match=f'no checkpoint in {tmp_path}'):
    translate.load_translator(str(tmp_path), 'AtoB')
  with pytest.raises(ValueError, match="unknown direction 'AB'"):
    translate.load_translator(str(tmp_path), 'AB')
  (tmp_path / 'empty').mkdir()
  translator = identity(4, [])
  with pytest.raises(FileNotFoundError, match='no image files in'):
    translate.translate_path(translator, str(tmp_path / 'empty'), tmp_path / 'out')


def test_command_fails_when_no_file_is_readable(workdir, tmp_path):
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'x.png').write_bytes(b'nope')
  with pytest.raises(ValueError, match=r"none of the 1 image files in .*in could be read: "
                                       r".*x\.png \(not an image"):
    translate.run(str(workdir), 'AtoB', str(tmp_path / 'in'), str(tmp_path / 'out'))
