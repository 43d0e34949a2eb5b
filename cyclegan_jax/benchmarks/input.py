"""`python -m cyclegan_jax.benchmarks.input`: how fast the input pipeline feeds, and at what memory.

Writes --num_files synthetic jpgs per domain into a temporary folder (or reads --path), runs the
train iterator and prints one JSON line: images/s (A and B images counted separately), start-up
time (listing and checking every file) and resident memory. Memory must not grow with the number
of files, because images stream from disk; compare --num_files 100 with 5000.
"""

import argparse
import importlib.util
import json
from pathlib import Path
import tempfile
import time

import ml_collections
import numpy as np
from PIL import Image

from cyclegan_jax.data import input_pipeline

_DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / 'configs' / 'default.py'


def memory_mib() -> dict[str, float]:
  """Current (VmRSS) and peak (VmHWM) resident memory of this process, from /proc."""
  fields = dict(line.split(':', 1) for line in Path('/proc/self/status').read_text().splitlines())
  return {key: int(fields[key].split()[0]) / 1024 for key in ('VmRSS', 'VmHWM')}


def _write_images(root: Path, num_files: int, size: int) -> None:
  """Smooth random pictures (upsampled 8×8 noise plus grain): photo-like jpg sizes and decoding."""
  rng = np.random.default_rng(0)
  for folder in ('trainA', 'trainB'):
    (root / folder).mkdir(parents=True)
    for i in range(num_files):
      coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
      smooth = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), np.int16)
      grain = rng.integers(-8, 9, smooth.shape, dtype=np.int16)
      Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(
          root / folder / f'{i:06d}.jpg', quality=90)


def load_config(path: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location('_benchmark_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def run(args: argparse.Namespace, path: str) -> dict[str, float]:
  config = load_config(args.config)
  config.batch_size = args.batch_size
  config.data.update(source=args.source, path=path, demo_size=args.num_files,
                     load_size=args.load_size, crop_size=args.crop_size,
                     num_workers=args.num_workers, prefetch=args.prefetch)
  before = memory_mib()['VmRSS']
  start = time.perf_counter()
  iterator = input_pipeline.open(config).train_iterator()
  startup = time.perf_counter() - start
  for _ in range(args.warmup_steps):
    next(iterator)
  start = time.perf_counter()
  for _ in range(args.steps):
    batch = next(iterator)
  elapsed = time.perf_counter() - start
  images = 2 * args.steps * batch['a'].shape[0] * batch['a'].shape[1]
  memory = memory_mib()
  return {'source': args.source, 'num_files_per_domain': args.num_files,
          'file_size': args.size, 'load_size': args.load_size, 'crop_size': args.crop_size,
          'batch_size': args.batch_size, 'num_workers': args.num_workers,
          'startup_s': round(startup, 2), 'images_per_s': round(images / elapsed, 1),
          'rss_before_mib': round(before, 1), 'rss_steady_mib': round(memory['VmRSS'], 1),
          'rss_peak_mib': round(memory['VmHWM'], 1)}


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default=str(_DEFAULT_CONFIG), help='config file (get_config)')
  parser.add_argument('--num_files', type=int, default=100, help='images per domain')
  parser.add_argument('--size', type=int, default=256, help='side of the generated images')
  parser.add_argument('--source', choices=('folders', 'demo'), default='folders')
  parser.add_argument('--path', default='', help='existing folder or zip (else generated)')
  parser.add_argument('--load_size', type=int, default=286)
  parser.add_argument('--crop_size', type=int, default=256)
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--num_workers', type=int, default=2)
  parser.add_argument('--prefetch', type=int, default=2)
  parser.add_argument('--warmup_steps', type=int, default=5)
  parser.add_argument('--steps', type=int, default=50)
  return parser


def _run_in_tmp(args: argparse.Namespace) -> dict[str, float]:
  """`run`, on generated jpgs in a temporary folder unless args.path names data."""
  with tempfile.TemporaryDirectory() as tmp:
    path = args.path
    if args.source == 'folders' and not path:
      _write_images(Path(tmp), args.num_files, args.size)
      path = tmp
    return run(args, path)


def measure(config_path: str = str(_DEFAULT_CONFIG), **overrides) -> dict[str, float]:
  """The record `main` prints, for the command-line defaults updated by `overrides`
  (e.g. crop_size=128); what `python -m cyclegan_jax.benchmarks.step` reports beside the step."""
  args = _parser().parse_args([])
  unknown = set(overrides) - set(vars(args))
  if unknown:
    raise ValueError(f'unknown benchmarks.input settings: {", ".join(sorted(unknown))}')
  vars(args).update(overrides, config=config_path)
  return _run_in_tmp(args)


def main() -> None:
  print(json.dumps(_run_in_tmp(_parser().parse_args())))


if __name__ == '__main__':
  main()
