"""Datasets → per-host, per-device numpy batches for the train step, and fixed images for eval.

Sources (config.data.source): 'demo' (embedded photos ↔ Starry Night crops, demo_data.py),
'folders' (a folder or zip holding trainA/trainB/testA/testB, image_files.py), 'tfds' (read
with random access through `tfds.data_source`, which needs no TensorFlow; the dir_*/test_dir_*
keys name the splits and data.path, if set, is the tfds data_dir) and 'digits' (data.domain_a/b
in mnist, svhn, mnistm from the data directory data.path, digits_data.py; labels stay unused).

Order, as the reference unaligned dataset: an epoch is max(|A|, |B|) samples; sample k of an
epoch takes A item perm[k] mod |A| (perm is a fresh shuffle each epoch, the identity with
serial_batches) and a random B item (k mod |B| with serial_batches). Every choice and every
augmentation comes from numpy generators seeded with (seed, epoch or sample number) alone.

Global order: the global batch of step t is samples t·B … t·B + B − 1 (B = config.batch_size),
whatever the topology. The host whose devices come p-th in the device order prepares its
devices' consecutive share of them, reading any item it needs. So a run on 1 host × 4 devices and
on 2 hosts × 2 devices trains on the same images, crops and flips at every step, and resuming
at step t, on any topology, needs only t. Hosts never talk, so nothing can hang. Every host
checks all files at start-up, so all agree on the file list and the skip report.
"""

import collections
from collections.abc import Iterator
import concurrent.futures
import functools
import itertools
from typing import Any

from absl import logging
import jax
import numpy as np
from PIL import Image

from cyclegan_jax import parallel
from cyclegan_jax.data import demo_data, digits_data, image_files, preprocess

_ORDER_STREAM, _SAMPLE_STREAM = 0, 1  # Seed-sequence tags; demo_data uses 2, digits_data 3.
SOURCES = ('demo', 'folders', 'tfds', 'digits')


def check_config(config) -> None:
  """Refuses data settings no source could satisfy, naming the key."""
  data = config.data
  if data.source not in SOURCES:
    raise ValueError(f'data.source={data.source!r}; expected one of {", ".join(SOURCES)}.')
  preprocess.check_config(data)
  if data.source == 'digits':
    if not data.path:
      raise ValueError('data.path is empty: source digits needs a data directory (for its files '
                       'and caches), e.g. --config.data.path=workdirs/digits_data.')
    for key in ('domain_a', 'domain_b'):
      if data[key] not in digits_data.DOMAINS:
        raise ValueError(f'data.{key}={data[key]!r}; expected one of '
                         f'{", ".join(digits_data.DOMAINS)}.')
  if data.num_workers < 1 or data.prefetch < 0:
    raise ValueError(f'need data.num_workers >= 1 and data.prefetch >= 0, got '
                     f'{data.num_workers} and {data.prefetch}.')


def _tfds_domain(config, split: str) -> image_files.Domain:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # Only this source.
  source = tfds.data_source(config.data.name, split=split, data_dir=config.data.path or None,
                            download=False)
  name = f'tfds {config.data.name} split {split}'

  def load(i: int) -> Image.Image:
    pixels = source[i]['image']
    return image_files.to_rgb(Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels))

  return image_files.Domain(name, len(source), load, lambda i: f'{name} record {i}')


def _domain(config, domain: str, split: str) -> image_files.Domain | None:
  """All of one domain's split (every host the same), or None if the source lacks a test split."""
  data = config.data
  folder = {('a', 'train'): data.dir_a, ('b', 'train'): data.dir_b,
            ('a', 'test'): data.test_dir_a, ('b', 'test'): data.test_dir_b}[domain, split]
  if data.source == 'demo':
    result = demo_data.demo_domain(domain, data.demo_size if split == 'train' else
                                   data.demo_test_size, data.crop_size, config.seed, split)
  elif data.source == 'folders':
    store = image_files.open_store(data.path)
    if split == 'test' and image_files.find_folder(store, folder) is None:
      return None
    size_problem = functools.partial(preprocess.size_problem, data=data)
    result = image_files.folder_domain(store, folder, size_problem, data.strict, data.num_workers)
  elif data.source == 'digits':
    name = data[f'domain_{domain}']
    digits = digits_data.load_digits(name, split, data.path, data.mnistm_seed)
    result = digits_data.as_domain(digits, f'{name} {split} ({data.path})')
  else:
    result = _tfds_domain(config, folder)
  logging.info('%s: %d images', result.name, result.size)
  return result


def _hosts(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(f'process_index {index} is not in [0, {count}).')
  return index, count


def _sample_plans(seed: int, size_a: int, size_b: int, serial: bool,
                  samples: Iterator[int]) -> Iterator[tuple[int, int, np.random.Generator]]:
  """(A index, B index, augmentation rng) for each of the global sample numbers `samples`."""
  epoch_length = max(size_a, size_b)
  order, order_epoch = None, None
  for sample in samples:
    epoch, position = divmod(sample, epoch_length)
    # The 0 is where the host index once was: single-host runs draw as they always did.
    rng = np.random.default_rng([seed, 0, _SAMPLE_STREAM, sample])
    if serial:
      yield position % size_a, position % size_b, rng
      continue
    if epoch != order_epoch:
      order_epoch = epoch
      order = np.random.default_rng([seed, 0, _ORDER_STREAM, epoch]).permutation(epoch_length)
    yield int(order[position]) % size_a, int(rng.integers(size_b)), rng


def host_samples(start_step: int, global_batch: int, first: int,
                 host_batch: int) -> Iterator[int]:
  """The global sample numbers a host prepares from `start_step` on: its consecutive share
  [first, first + host_batch) of every global batch."""
  for step in itertools.count(start_step):
    yield from range(step * global_batch + first, step * global_batch + first + host_batch)


def _prepared(domain: image_files.Domain, index: int, data,
              rng: np.random.Generator | None) -> np.ndarray:
  """One transformed item; failures name the file, as they surface far away, in the train loop."""
  try:
    return preprocess.transform(domain.load(index), data, rng)
  except Exception as e:  # Decoding and resizing raise many types; all mean "this file".
    raise image_files.BadImageError(f'{domain.describe(index)}: {e}') from e


def _batches(domains: dict[str, image_files.Domain],
             plans: Iterator[tuple[int, int, np.random.Generator]], host_batch: int,
             local_devices: int, data) -> Iterator[dict[str, np.ndarray]]:
  """Sharded batches of `domains` ({'a': ..., 'b': ...} or just 'a') forever; worker threads
  keep data.prefetch batches ready."""

  def sample(plan):
    index_a, index_b, rng = plan
    indices = {'a': index_a, 'b': index_b}  # A is prepared first: its rng draws never vary.
    return {d: _prepared(domain, indices[d], data, rng) for d, domain in domains.items()}

  # No shutdown needed: once the iterator is dropped, the collected pool wakes its threads, which
  # finish the batches already queued (at most prefetch + 1) and exit.
  pool = concurrent.futures.ThreadPoolExecutor(data.num_workers, 'input_pipeline')
  pending = collections.deque()
  while True:
    while len(pending) <= data.prefetch:
      pending.append([pool.submit(sample, p) for p in itertools.islice(plans, host_batch)])
    samples = [future.result() for future in pending.popleft()]
    yield parallel.shard_batch({d: np.stack([s[d] for s in samples]) for d in domains},
                               local_devices)


class Data:
  """One data source: its domains (each split opened, and every file checked, once, when first
  needed), their sizes, endless training batches from any step, and fixed evaluation images."""

  def __init__(self, config):
    self._config = config
    self._opened: dict[tuple[str, str], image_files.Domain | None] = {}

  def _split(self, domain: str, split: str) -> image_files.Domain | None:
    if (domain, split) not in self._opened:
      self._opened[domain, split] = _domain(self._config, domain, split)
    return self._opened[domain, split]

  @property
  def sizes(self) -> tuple[int, int]:
    """Global |A| and |B| of the training split, after bad files are dropped."""
    return tuple(domain.size for domain in self.train_domains())

  def steps_per_epoch(self) -> int:
    """An epoch is max(|A|, |B|) images, as in the reference."""
    return max(max(self.sizes) // self._config.batch_size, 1)

  def train_domains(self) -> tuple[image_files.Domain, image_files.Domain]:
    """The A and B training domains (every host reads from all of them)."""
    return self._split('a', 'train'), self._split('b', 'train')

  def train_iterator(self, start_step: int = 0, *, domains: str = 'ab',
                     process_index: int | None = None, process_count: int | None = None,
                     local_devices: int | None = None) -> Iterator[dict[str, Any]]:
    """Endless {'a', 'b'} float32 batches [local devices, per-device batch, crop, crop, 3] in
    [-1, 1]: this host's share of each global batch (see the module docstring).

    `domains='a'` prepares and yields A alone (DCGAN trains on A only); A's images and order are
    the same either way. With start_step=k it yields exactly what an iterator that ran k steps
    yields next. process_index, process_count and local_devices default to this process's;
    given, they yield what that host of another topology would be fed (each host with
    local_devices devices, hosts in device order), which tests use to compare topologies.
    """
    config = self._config
    if start_step < 0:
      raise ValueError(f'start_step={start_step} must be >= 0.')
    if domains not in ('ab', 'a'):
      raise ValueError(f"domains must be 'ab' or 'a', got {domains!r}.")
    local_devices = jax.local_device_count() if local_devices is None else local_devices
    index, count = _hosts(process_index, process_count)
    host_batch = local_devices * parallel.per_device_batch_size(config.batch_size,
                                                                count * local_devices)
    chosen = dict(zip('ab', self.train_domains()))
    samples = host_samples(start_step, config.batch_size, index * host_batch, host_batch)
    plans = _sample_plans(config.seed, chosen['a'].size, chosen['b'].size,
                          config.data.serial_batches, samples)
    return _batches({d: chosen[d] for d in domains}, plans, host_batch, local_devices,
                    config.data)

  def eval_images(self, domain: str, num: int, split: str = 'test') -> np.ndarray:
    """The first `num` usable images of a split (-1: all), [num, crop, crop, 3] float32 in [-1, 1].

    Deterministic (centre crop, no flip) and the same on every host. Without a test split (the
    folder without testA) it logs that and uses the train split.
    """
    if domain not in ('a', 'b') or split not in ('train', 'test'):
      raise ValueError(f"domain must be 'a' or 'b' and split 'train' or 'test', got {domain!r}, "
                       f'{split!r}.')
    images = self._split(domain, split)
    if images is None:
      logging.info('%s has no %s split for domain %s: eval images come from the train split.',
                   self._config.data.source, split, domain.upper())
      images = self._split(domain, 'train')
    count = images.size if num == -1 else num
    if not 0 < count <= images.size:
      raise ValueError(f'asked for {num} images of {images.name}, which has {images.size}.')
    with concurrent.futures.ThreadPoolExecutor(self._config.data.num_workers) as pool:
      return np.stack(list(pool.map(lambda i: _prepared(images, i, self._config.data, None),
                                    range(count))))


def open(config) -> Data:  # pylint: disable=redefined-builtin  # data.open, like io.open.
  """config.data's source. The config is checked by `check_config` (main does it once, first)."""
  return Data(config)
