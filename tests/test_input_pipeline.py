"""Input pipeline: sources, bad-file handling, determinism and resume, host sharding."""

import gc
import io
import itertools
import logging
import socket
import threading
import time
import zipfile

from configs import default
from cyclegan_jax.data import image_files
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.data import preprocess
import numpy as np
from PIL import Image
import pytest

CROP = 32


@pytest.fixture
def config():
  config = default.get_config()
  config.batch_size = 8  # conftest forces 8 CPU devices: batches are [8, 1, ...].
  config.data.crop_size = CROP
  config.data.load_size = 36
  config.data.demo_size = 12
  config.data.prefetch = 1
  return config


def _noise(height, width, channels=3, seed=0):
  shape = (height, width, channels) if channels > 1 else (height, width)
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _save(path, image, **kwargs):
  path.parent.mkdir(parents=True, exist_ok=True)
  image = image if isinstance(image, Image.Image) else Image.fromarray(image)
  image.save(path, **kwargs)


def _jpeg_bytes(image):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, 'JPEG')
  return buffer.getvalue()


# trainA holds 10 files with image extensions: 7 usable, 3 bad; 2 more files are ignored.
GOOD_A = ['good.jpg', 'good.png', 'grey.png', 'palette.png', 'rgba.png', 'sixteen.png',
          'nested/deeper/inner.JPG']
BAD_A = {'not_image.jpg': 'not an image: unknown format', 'tiny.png': '8×8 is smaller than crop 32',
         'truncated.jpg': 'truncated'}


def _build_dataset(root):
  a = root / 'trainA'
  _save(a / 'good.jpg', _noise(40, 48))
  _save(a / 'good.png', _noise(40, 40, seed=1))
  _save(a / 'grey.png', _noise(40, 40, channels=1))
  _save(a / 'palette.png', Image.fromarray(_noise(40, 40)).convert('P'))
  _save(a / 'rgba.png', _noise(40, 40, channels=4))
  _save(a / 'sixteen.png', np.full((40, 40), 65535, np.uint16))
  _save(a / 'nested' / 'deeper' / 'inner.JPG', _noise(44, 40, seed=2))
  _save(a / 'tiny.png', _noise(8, 8))
  (a / 'truncated.jpg').write_bytes(_jpeg_bytes(_noise(64, 64))[:-200])
  (a / 'not_image.jpg').write_text('this is text, not a jpeg')
  (a / 'README.txt').write_text('ignored: not an image extension')
  _save(a / '.hidden.jpg', _noise(40, 40))  # Hidden files (macOS debris) are ignored.
  for i in range(3):
    _save(root / 'trainB' / f'b{i}.jpg', _noise(40, 40, seed=10 + i))
  for domain in 'AB':
    for i in range(2):
      _save(root / f'test{domain}' / f't{i}.png', _noise(CROP, CROP, seed=20 + i))
  return root


def _folders_config(config, tmp_path, kind):
  """A dataset folder, or a zip holding it one level down (like vangogh2photo.zip)."""
  root = _build_dataset(tmp_path / 'mydata')
  if kind == 'zip':
    path = tmp_path / 'mydata.zip'
    with zipfile.ZipFile(path, 'w') as archive:
      for file in sorted(root.rglob('*')):
        if file.is_file():
          archive.write(file, file.relative_to(tmp_path).as_posix())
    root = path
  config.data.source = 'folders'
  config.data.path = str(root)
  config.data.preprocess = 'crop'  # Crops at full size: the 8×8 image is too small.
  return config


@pytest.fixture(params=['dir', 'zip'])
def folders_config(config, tmp_path, request):
  return _folders_config(config, tmp_path, request.param)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches1, batches2):
  for x, y in zip(batches1, batches2, strict=True):
    np.testing.assert_array_equal(x['a'], y['a'])
    np.testing.assert_array_equal(x['b'], y['b'])


def test_demo_batches_without_network(config, monkeypatch):
  def no_network(*args, **kwargs):
    raise OSError('network access attempted')

  monkeypatch.setattr(socket, 'socket', no_network)
  assert input_pipeline.open(config).sizes == (12, 12)
  batch = next(input_pipeline.open(config).train_iterator())
  for images in batch.values():
    assert images.shape == (8, 1, CROP, CROP, 3) and images.dtype == np.float32
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.05
  assert not np.array_equal(batch['a'], batch['b'])
  eval_images = input_pipeline.open(config).eval_images('b', 3)
  assert eval_images.shape == (3, CROP, CROP, 3)


def test_demo_test_split_holds_other_crops(config):
  """The demo's test split: data.demo_test_size crops drawn apart from the train split's (the
  same for every run of a seed), so scores use crops that training never saw."""
  config.data.demo_test_size = 5
  data = input_pipeline.open(config)
  test, train = (data.eval_images(d, -1) for d in 'ba'), (data.eval_images(d, 5, 'train')
                                                         for d in 'ba')
  for held_out, trained in zip(test, train):
    assert held_out.shape == (5, CROP, CROP, 3)
    for image in held_out:
      assert not any(np.array_equal(image, t) for t in trained)
  np.testing.assert_array_equal(data.eval_images('b', 5), input_pipeline.open(config).eval_images(
      'b', 5))


def test_folders_skip_bad_files(folders_config, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  data = input_pipeline.open(folders_config)
  assert data.sizes == (7, 3)
  domain_a, domain_b = data.train_domains()  # Opened once: one report per domain.
  used = sorted(domain_a.describe(i) for i in range(domain_a.size))
  where = domain_a.name
  assert used == sorted(f'{where}/{name}' for name in GOOD_A)
  summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith('skipped')]
  assert len(summaries) == 1
  expected = f'skipped 3 of 10 files in {where}: not_image.jpg (not an image: unknown format'
  assert summaries[0].startswith(expected)
  assert summaries[0].endswith(
      ', tiny.png (8×8 is smaller than crop 32), truncated.jpg (truncated)')
  assert domain_b.size == 3
  batch = next(input_pipeline.open(folders_config).train_iterator())
  assert batch['a'].shape == batch['b'].shape == (8, 1, CROP, CROP, 3)


def test_folders_strict_names_bad_files(folders_config):
  folders_config.data.strict = True
  with pytest.raises(ValueError, match='3 of 10 files') as error:
    input_pipeline.open(folders_config).sizes
  for name, reason in BAD_A.items():
    assert f'{name} ({reason}' in str(error.value)
  assert f'{folders_config.data.path}/' in str(error.value)  # Full paths.


def test_missing_and_empty_folders(config, tmp_path):
  root = _build_dataset(tmp_path / 'data')
  config.data.source = 'folders'
  config.data.path = str(root)
  config.data.dir_b = 'nowhere'
  with pytest.raises(FileNotFoundError, match=r'no folder nowhere .*expected nowhere/ .*\.jpg'):
    input_pipeline.open(config).sizes
  (root / 'emptyB').mkdir()
  (root / 'emptyB' / 'notes.txt').write_text('no images here')
  config.data.dir_b = 'emptyB'
  with pytest.raises(FileNotFoundError, match=r'no image files in .*emptyB .*\.png'):
    input_pipeline.open(config).sizes
  config.data.path = str(tmp_path / 'absent.zip')
  with pytest.raises(FileNotFoundError, match='absent.zip does not exist'):
    input_pipeline.open(config).sizes


def test_decode_modes():
  def roundtrip(image, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, 'PNG', **kwargs)
    return np.asarray(image_files.decode(buffer.getvalue()))

  sixteen = np.array([[0, 257, 32896, 65535]], np.uint16)
  np.testing.assert_array_equal(roundtrip(Image.fromarray(sixteen))[..., 0], [[0, 1, 128, 255]])
  grey = roundtrip(Image.fromarray(np.array([[7, 200]], np.uint8)))
  np.testing.assert_array_equal(grey, [[[7] * 3, [200] * 3]])
  palette = Image.new('P', (2, 1))
  palette.putpalette([255, 0, 0, 0, 0, 255])
  palette.putdata([0, 1])
  np.testing.assert_array_equal(roundtrip(palette, transparency=1), [[[255, 0, 0], [0, 0, 255]]])
  rgba = roundtrip(Image.fromarray(np.array([[[1, 2, 3, 0]]], np.uint8)))
  np.testing.assert_array_equal(rgba, [[[1, 2, 3]]])


def test_exif_orientation_is_applied():
  exif = Image.Exif()
  exif[0x0112] = 6  # Rotate 90° on display.
  buffer = io.BytesIO()
  Image.fromarray(_noise(20, 50)).save(buffer, 'JPEG', exif=exif)
  assert image_files.decode(buffer.getvalue()).size == (20, 50)
  assert image_files.probe(buffer.getvalue()) == (20, 50)


def test_sixteen_bit_scaling_end_to_end(config, tmp_path):
  _save(tmp_path / 'testA' / 'white16.png', np.full((CROP, CROP), 65535, np.uint16))
  _save(tmp_path / 'testA' / 'mid16.png', np.full((CROP, CROP), 32896, np.uint16))  # 128·257
  config.data.source, config.data.path = 'folders', str(tmp_path)
  images = input_pipeline.open(config).eval_images('a', -1)
  assert images.shape == (2, CROP, CROP, 3)
  np.testing.assert_allclose(images[0], 128 / 127.5 - 1, atol=1e-6)  # mid16.png sorts first.
  np.testing.assert_array_equal(images[1], 1.0)


def test_eval_images_are_deterministic_and_fall_back(folders_config, caplog):
  first = input_pipeline.open(folders_config).eval_images('a', 2)
  np.testing.assert_array_equal(first, input_pipeline.open(folders_config).eval_images('a', 2))
  folders_config.data.test_dir_a = 'testC'
  caplog.set_level(logging.INFO, logger='absl')
  fallback = input_pipeline.open(folders_config).eval_images('a', 7)
  assert fallback.shape == (7, CROP, CROP, 3)
  assert any('eval images come from the train split' in r.getMessage() for r in caplog.records)
  with pytest.raises(ValueError, match='asked for 8 images'):
    input_pipeline.open(folders_config).eval_images('a', 8, split='train')


def test_worker_errors_name_the_file(config, tmp_path):
  iterator = input_pipeline.open(_folders_config(config, tmp_path, 'dir')).train_iterator()
  broken = tmp_path / 'mydata' / 'trainA' / 'good.png'
  broken.write_bytes(b'garbage')
  with pytest.raises(image_files.BadImageError, match=f'{broken}: not an image'):
    _take(iterator, 2)  # One epoch of A (7 images) fits in the first 8-image batch.


@pytest.mark.parametrize('source', ['demo', 'folders'])
def test_same_seed_same_batches_and_resume(config, folders_config, source):
  config = folders_config if source == 'folders' else config
  run = _take(input_pipeline.open(config).train_iterator(), 4)  # Crosses epoch boundaries.
  _assert_same(run, _take(input_pipeline.open(config).train_iterator(), 4))
  _assert_same(run[3:], _take(input_pipeline.open(config).train_iterator(start_step=3), 1))
  config.seed = 1
  other = _take(input_pipeline.open(config).train_iterator(), 1)[0]
  assert not np.array_equal(run[0]['a'], other['a'])


def test_domain_a_alone_is_the_same_stream_of_a(config):
  """DCGAN reads A only: the pipeline then prepares no B, and A's images are unchanged (the demo
  crops and flips at random, so a changed rng would show)."""
  both = _take(input_pipeline.open(config).train_iterator(start_step=2), 3)
  alone = _take(input_pipeline.open(config).train_iterator(start_step=2, domains='a'), 3)
  assert [set(batch) for batch in alone] == [{'a'}] * 3
  for x, y in zip(both, alone):
    np.testing.assert_array_equal(x['a'], y['a'])
  with pytest.raises(ValueError, match="domains must be 'ab' or 'a', got 'b'"):
    input_pipeline.open(config).train_iterator(domains='b')


def test_sample_plans_follow_the_unaligned_reference():
  plans = input_pipeline._sample_plans(0, size_a=5, size_b=3, serial=False,
                                       samples=itertools.count(0))
  pairs = [next(plans)[:2] for _ in range(15)]
  for epoch in range(3):
    assert sorted(a for a, _ in pairs[5 * epoch:5 * epoch + 5]) == list(range(5))
  assert {b for _, b in pairs} == {0, 1, 2}
  resumed = input_pipeline._sample_plans(0, size_a=5, size_b=3, serial=False,
                                         samples=itertools.count(7))
  assert [next(resumed)[:2] for _ in range(8)] == pairs[7:]
  serial = input_pipeline._sample_plans(0, size_a=2, size_b=3, serial=True,
                                        samples=itertools.count(0))
  assert [next(serial)[:2] for _ in range(4)] == [(0, 0), (1, 1), (0, 2), (0, 0)]


def test_each_host_takes_its_consecutive_share_of_every_global_batch():
  host1 = input_pipeline.host_samples(start_step=2, global_batch=8, first=4, host_batch=4)
  assert list(itertools.islice(host1, 8)) == [20, 21, 22, 23, 28, 29, 30, 31]


@pytest.mark.parametrize('source', ['demo', 'folders'])
def test_every_topology_trains_on_the_same_global_batches(config, folders_config, source):
  """1 host × 4 devices, 2 × 2 and 4 × 1, from step 0 and from step 3: the same images, crops
  and flips, each host with its share, in device order."""
  config = folders_config if source == 'folders' else config
  config.batch_size = 4
  data = input_pipeline.open(config)
  for start in (0, 3):
    one = _take(data.train_iterator(start, process_index=0, process_count=1, local_devices=4), 2)
    for hosts in (2, 4):
      fed = [_take(data.train_iterator(start, process_index=p, process_count=hosts,
                                       local_devices=4 // hosts), 2) for p in range(hosts)]
      for step in range(2):
        for d in 'ab':
          np.testing.assert_array_equal(
              one[step][d], np.concatenate([f[step][d] for f in fed]), f'{hosts} hosts, {d}')
  assert not np.array_equal(one[0]['a'][0], one[0]['a'][1])


@pytest.mark.parametrize('mode', preprocess.MODES)
def test_every_preprocess_mode_gives_one_shape(config, mode):
  config.data.preprocess = mode
  image = Image.fromarray(_noise(50, 70))
  train = preprocess.transform(image, config.data, np.random.default_rng(0))
  test = preprocess.transform(image, config.data, None)
  assert train.shape == test.shape == (CROP, CROP, 3) and test.dtype == np.float32
  np.testing.assert_array_equal(test, preprocess.transform(image, config.data, None))


def test_resize_and_crop_matches_the_reference(config):
  image = Image.fromarray(_noise(50, 70))
  resized = np.asarray(image.resize((36, 36), Image.Resampling.BICUBIC), np.float32)
  np.testing.assert_allclose(preprocess.transform(image, config.data, None),
                             resized[2:34, 2:34] / 127.5 - 1, atol=1e-6)  # Centre crop.
  views = {preprocess.transform(image, config.data, np.random.default_rng(s)).tobytes()
           for s in range(20)}
  assert len(views) > 10  # Random crops and flips.


def test_size_limits_and_bad_settings(config):
  assert preprocess.size_problem(8, 8, config.data) is None  # Resized first.
  config.data.preprocess = 'none'  # Rounds to a multiple of 4 first: 29 → 28, 30 → 32.
  assert preprocess.size_problem(29, 40, config.data) == '29×40 is smaller than crop 32'
  assert preprocess.size_problem(30, 40, config.data) is None
  config.data.preprocess = 'resize'
  with pytest.raises(ValueError, match="data.preprocess='resize'; expected one of"):
    input_pipeline.check_config(config)
  config.data.preprocess, config.data.load_size = 'resize_and_crop', 30
  with pytest.raises(ValueError, match='load_size=30 is smaller than data.crop_size=32'):
    input_pipeline.check_config(config)


def test_dropped_iterator_ends_its_threads(config):
  def workers():
    return [t for t in threading.enumerate() if t.name.startswith('input_pipeline')]

  iterator = input_pipeline.open(config).train_iterator()
  next(iterator)
  assert workers()
  del iterator
  gc.collect()
  deadline = time.monotonic() + 20
  while workers() and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not workers()


def test_batch_must_split_over_devices(config):
  config.batch_size = 3
  with pytest.raises(ValueError, match='multiple of the 8 devices'):
    input_pipeline.open(config).train_iterator()


def test_tfds_source_with_mock_data(config):
  tfds = pytest.importorskip('tensorflow_datasets')
  config.data.source = 'tfds'
  config.data.name = 'cycle_gan/vangogh2photo'
  with tfds.testing.mock_data(num_examples=6):
    assert input_pipeline.open(config).sizes == (6, 6)
    batches = _take(input_pipeline.open(config).train_iterator(), 2)
    _assert_same(batches[1:], _take(input_pipeline.open(config).train_iterator(1), 1))
    second_host = _take(input_pipeline.open(config).train_iterator(
        process_index=1, process_count=2, local_devices=4), 1)
    np.testing.assert_array_equal(second_host[0]['a'], batches[0]['a'][4:])
    test_images = input_pipeline.open(config).eval_images('b', 2)
  assert batches[0]['a'].shape == (8, 1, CROP, CROP, 3)
  assert -1 <= batches[0]['b'].min() and batches[0]['b'].max() <= 1
  assert test_images.shape == (2, CROP, CROP, 3)
