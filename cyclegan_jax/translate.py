"""Translate images with a trained generator, each at its own size.

    python -m cyclegan_jax.translate --workdir=W --direction=AtoB --input=PATH --output=DIR

(the same as `python -m cyclegan_jax.main --mode=translate ...`). PATH is one image, a folder
(searched recursively) or a zip. The generators are fully convolutional, so every image keeps
its size: it is reflect-padded up to a multiple of the generator's total stride, translated and
cropped back. Each distinct padded shape compiles once. Unreadable files are reported by name
and skipped.
"""

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
import sys
import zipfile

import numpy as np
from absl import logging

from cyclegan_jax import checkpointing, faults, visualize
from cyclegan_jax.data import image_files
from cyclegan_jax.families import base
from cyclegan_jax.models import generators
from cyclegan_jax.progress import Progress

DIRECTIONS = ('AtoB', 'BtoA')


@dataclasses.dataclass(frozen=True)
class Translator:
  """A generator from a checkpoint: `apply` maps one [H, W, channels] image in [-1, 1] (H, W
  multiples of `multiple`) to its translation."""
  apply: Callable[[np.ndarray], np.ndarray]
  multiple: int
  step: int
  channels: int = 3  # 1: images are read as greyscale (digit models).


@dataclasses.dataclass
class Report:
  written: list[Path] = dataclasses.field(default_factory=list)
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (file, reason)


def load_translator(workdir: str, direction: str, step: int | None = None) -> Translator:
  """The generator for `direction` of the latest (or given) checkpoint in `workdir`, in eval
  mode, as its family names it (CycleGAN: AtoB is G_AB, BtoA is G_BA; CUT: AtoB is G).

  The networks are built from the config stored with the checkpoint, so no config is needed.
  """
  if direction not in DIRECTIONS:
    raise ValueError(f'unknown direction {direction!r}; expected AtoB or BtoA')
  loaded = checkpointing.load(workdir, step=step)
  if direction not in loaded.family.translators:
    offered = ', '.join(loaded.family.translators) or 'none'
    raise ValueError(f'{workdir} holds a {loaded.config.family} model, which translates '
                     f'{offered}, not {direction}.')
  return translator(loaded, direction)


def translator(loaded: checkpointing.Loaded, direction: str) -> Translator:
  """The generator of a loaded checkpoint for one of its family's translator directions."""
  name, channels = translator_generator(loaded, direction)
  module = loaded.models.generators[name]
  params, batch_stats = loaded.params[name], loaded.batch_stats[name]
  apply = lambda image: np.asarray(base.apply(module, params, batch_stats, image[None]))[0]
  return Translator(apply, generators.size_multiple(module), loaded.step, channels)


def translator_generator(loaded: checkpointing.Loaded, direction: str) -> tuple[str, int]:
  """(name, input channels) of the generator for one of the family's translator directions;
  export serves the same one."""
  name, domain = loaded.family.translators[direction]
  model = loaded.config.model
  return name, model.input_nc if domain == 'a' else model.output_nc


def translate_image(translator: Translator, image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, C] → uint8 [H, W, C'], reflect-padded to the size multiple and cropped back."""
  h, w = image.shape[:2]
  m = translator.multiple
  pad = ((0, -h % m), (0, -w % m), (0, 0))
  x = np.pad(image.astype(np.float32) / 127.5 - 1.0, pad, mode='reflect' if min(h, w) > 1
             else 'edge')
  return visualize.to_uint8(translator.apply(x)[:h, :w])


def _sources(input_path: str) -> tuple[list[str], Callable[[str], bytes], Callable[[str], str]]:
  """(file names, read, describe) for one image file, a folder or a zip."""
  path = Path(input_path).expanduser()
  if path.is_file() and not zipfile.is_zipfile(path):
    return [path.name], lambda _: path.read_bytes(), lambda _: str(path)
  store = image_files.open_store(str(path))
  names = [n for n in store.list_files('') if n.lower().endswith(image_files.IMAGE_EXTENSIONS)]
  if not names:
    raise FileNotFoundError(f'no image files in {path} (looked recursively for '
                            f'{", ".join(image_files.IMAGE_EXTENSIONS)}).')
  return names, store.read, store.describe


def _output_names(names: list[str]) -> list[Path]:
  """<name>.png with the old suffix dropped, or kept (a.jpg.png) where that would collide."""
  stems = [Path(n).with_suffix('.png') for n in names]
  clashes = {s for s in stems if stems.count(s) > 1}
  return [Path(f'{n}.png') if s in clashes else s for n, s in zip(names, stems)]


def translate_path(translator: Translator, input_path: str, output_dir: str | Path) -> Report:
  """Translates every image under `input_path` into `output_dir`/<same relative name>.png."""
  names, read, describe = _sources(input_path)
  out = Path(output_dir)
  report = Report()
  progress = Progress('Translating', len(names), 'images')
  for i, (name, out_name) in enumerate(zip(names, _output_names(names)), 1):
    try:
      image = image_files.decode(read(name))
    except (image_files.BadImageError, OSError, zipfile.BadZipFile) as e:
      report.skipped.append((describe(name), str(e)))
      logging.warning('[%d/%d] skipped %s: %s', i, len(names), describe(name), e)
      progress.update(i)
      continue
    target = out / out_name
    target.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(image.convert('L'))[..., None] if translator.channels == 1 else image
    out_image = translate_image(translator, np.asarray(pixels))
    visualize.write_png(target, out_image[..., 0] if out_image.shape[-1] == 1 else out_image)
    report.written.append(target)
    progress.update(i)
  return report


def run(workdir: str, direction: str, input_path: str, output_dir: str) -> Report:
  """The command: translate, then one summary line naming what was written and what was not."""
  translator = load_translator(workdir, direction)
  logging.info('%s from %s, checkpoint step %d', direction, workdir, translator.step)
  report = translate_path(translator, input_path, output_dir)
  skipped = '; '.join(f'{n} ({why})' for n, why in report.skipped)
  if not report.written:
    raise ValueError(f'none of the {len(report.skipped)} image files in {input_path} could be '
                     f'read: {skipped}')
  summary = f'wrote {len(report.written)} PNGs to {output_dir}'
  if report.skipped:
    summary += f'; skipped {len(report.skipped)} unreadable files: {skipped}'
  logging.info(summary)
  return report


def run_command(workdir: str, direction: str, input_path: str, output_dir: str) -> None:
  """`run` for a command line: a bad workdir, direction or input ends in one line, not a
  traceback."""
  try:
    run(workdir, direction, input_path, output_dir)
  except (checkpointing.NoReadableCheckpointError, image_files.BadImageError, ValueError,
          FileNotFoundError) as e:
    sys.exit(f'error: {e}')


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='a trained (or converted) workdir')
  parser.add_argument('--direction', choices=DIRECTIONS, default='AtoB',
                      help='AtoB (CycleGAN: G_AB; CUT: G) or BtoA (G_BA)')
  parser.add_argument('--input', required=True, help='an image, a folder or a zip')
  parser.add_argument('--output', required=True, help='folder for the PNGs')
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  run_command(args.workdir, args.direction, args.input, args.output)


if __name__ == '__main__':
  faults.quiet_library_logs()  # The process's logging, so not in main(), which tests call.
  main()
