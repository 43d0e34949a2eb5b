"""`python -m cyclegan_jax.digit_figure --workdir=W --out=F.png`: the picture of a digit run.

Row 1 holds test digits of the domain that is translated into MNIST (MNIST-M, SVHN), chosen among
the first `pool`: the first `columns`, the `columns` with the lightest backgrounds (where strokes
break most often), and the first `columns` whose translation the scoring classifier misreads.
Row 2 holds their translations, a red frame around each misread one, so the failures show.
Rows 3 and 4: MNIST test digits and their translations the other way. The generators come from
the workdir's latest checkpoint, the data and the classifier from the config stored with it.
"""

import argparse
from collections.abc import Callable
import sys

import numpy as np

from cyclegan_jax import checkpointing, translate, visualize
from cyclegan_jax.data import digits_data
from cyclegan_jax.metrics import digits

RED = np.array([1.0, -1.0, -1.0], np.float32)  # In the pipeline's [-1, 1] scale.


def lightest(images: np.ndarray, count: int) -> np.ndarray:
  """Indices of the `count` images [n, H, W, C] with the highest mean value, lightest first
  (ties by index)."""
  brightness = np.asarray(images, np.float64).mean(axis=(1, 2, 3))
  return np.argsort(-brightness, kind='stable')[:count]


def framed(image: np.ndarray) -> np.ndarray:
  """`image` [H, W, 3] in [-1, 1] with a one-pixel red border."""
  out = np.array(image, np.float32)
  out[0, :], out[-1, :], out[:, 0], out[:, -1] = RED, RED, RED, RED
  return out


def figure(source: np.ndarray, labels: np.ndarray, mnist: np.ndarray,
           to_mnist: Callable[[np.ndarray], np.ndarray],
           from_mnist: Callable[[np.ndarray], np.ndarray],
           predict: Callable[[np.ndarray], np.ndarray], columns: int = 8) -> np.ndarray:
  """The four-row grid (uint8) from test images in [-1, 1]: `source` [n, H, W, 3] (the pool)
  with their `labels`, `mnist` [m, H, W, 3]; the two translations map one batch each, and
  `predict` maps MNIST-like images to class indices. Columns: the first `columns` of the pool,
  its `columns` lightest, then its first `columns` misread ones (fewer if there are fewer)."""
  translated = to_mnist(source)
  wrong = predict(translated) != labels
  chosen = np.concatenate([np.arange(columns), lightest(source, columns),
                           np.flatnonzero(wrong)[:columns]])
  row_2 = [framed(translated[i]) if wrong[i] else translated[i] for i in chosen]
  mnist = mnist[:len(chosen)]
  return visualize.image_grid([list(source[chosen]), row_2, list(mnist), list(from_mnist(mnist))])


def _direction(source: str) -> str:
  return 'BtoA' if source == 'b' else 'AtoB'


def write(workdir: str, out: str, columns: int = 8, pool: int = 2000) -> None:
  """Draws the figure of `workdir`'s latest checkpoint to `out` (PNG)."""
  loaded = checkpointing.load(workdir)
  config = loaded.config
  data = config.data
  directions = digits.translations_into_mnist(data)
  if len(directions) != 1:
    raise ValueError(f'{workdir} translates {data.domain_a} and {data.domain_b}: the figure needs '
                     'MNIST as exactly one of them.')
  (source, target), = directions
  test = lambda domain: digits_data.load_digits(data[f'domain_{domain}'], 'test', data.path,
                                                data.mnistm_seed)
  source_digits = test(source)
  images = digits.prepared(config, source_digits, pool)
  mnist = digits.prepared(config, test(target), 3 * columns)

  def translator(direction: str) -> Callable[[np.ndarray], np.ndarray]:
    apply = translate.translator(loaded, direction).apply
    return lambda batch: np.stack([apply(x) for x in batch])

  params = digits.load_classifier(config)
  predict = lambda x: np.argmax(digits.logits(config.digit_classifier, params, x), -1)
  grid = figure(images, source_digits.labels[:pool], mnist, translator(_direction(source)),
                translator(_direction(target)), predict, columns)
  visualize.write_png(out, grid)
  print(f'{out}: step {loaded.step}; columns: the first {columns} test digits of '
        f'{data[f"domain_{source}"]}, the {columns} lightest and the first {columns} misread '
        f'among {pool}')


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='a digit run (configs/mnist2mnistm.py)')
  parser.add_argument('--out', required=True, help='the PNG to write')
  parser.add_argument('--columns', type=int, default=8, help='ordinary digits, and as many light')
  parser.add_argument('--pool', type=int, default=2000,
                      help='the lightest and the misread digits among this many test digits')
  args = parser.parse_args(argv)
  try:
    write(args.workdir, args.out, args.columns, args.pool)
  except (checkpointing.NoReadableCheckpointError, ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  main()
