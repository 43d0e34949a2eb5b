"""FID and KID from Inception pool3 features: statistics, distances and a stats cache.

The distances run on the host in float64, as in the references (pytorch-fid's
`calculate_frechet_distance`, clean-fid's `kernel_distance`), with the same values; only feature
extraction runs on the accelerator, jitted in fixed-size batches so one compilation serves every
set of images.
"""

from collections.abc import Callable
import hashlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cyclegan_jax.models import inception
from cyclegan_jax.progress import Progress


def _check_statistics(mu1, sigma1, mu2, sigma2) -> None:
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f'mismatched statistics: means {mu1.shape}, {mu2.shape}; covariances '
                     f'{sigma1.shape}, {sigma2.shape}.')


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  """The symmetric square root of a covariance; rounding's tiny negative eigenvalues count as 0."""
  eigenvalues, vectors = np.linalg.eigh(sigma)
  return (vectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½, in float64.

  tr (Σ₁Σ₂)^½ is taken as Σ √λᵢ over the eigenvalues of the symmetric PSD matrix Σ₁^½ Σ₂ Σ₁^½,
  which has the eigenvalues of Σ₁Σ₂. It is the value pytorch-fid gets from scipy's sqrtm of the
  non-symmetric product, without its complex round-off, its eps·I retry for singular
  covariances (always the case with fewer images than 2048), or its cost at d = 2048 (51 s on
  this shared 2-core machine, against well under a second here for a few hundred images).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  _check_statistics(mu1, sigma1, mu2, sigma2)
  root1 = _psd_sqrt(sigma1)
  product = root1 @ sigma2 @ root1
  trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, covariance) over rows, in float64; needs two or more rows."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f'need [N >= 2, d] features for a covariance, got {features.shape}.')
  return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
  """FID of two feature sets. With fewer rows than dimensions (the usual test split: hundreds
  of images, 2048 features) it works on the n₂×n₁ matrix of centred features instead of d×d:
  with Σᵢ = XᵢᵀXᵢ/(nᵢ−1), tr (Σ₁Σ₂)^½ is the sum of the singular values of X₂X₁ᵀ/√((n₁−1)(n₂−1))."""
  (mu1, sigma1), (mu2, sigma2) = statistics(features1), statistics(features2)
  n1, n2, d = len(features1), len(features2), mu1.shape[0]
  if max(n1, n2) > d:
    return frechet_distance(mu1, sigma1, mu2, sigma2)
  x1 = np.asarray(features1, np.float64) - mu1
  x2 = np.asarray(features2, np.float64) - mu2
  trace_sqrt = np.sum(np.linalg.svd(x2 @ x1.T, compute_uv=False)) / np.sqrt((n1 - 1) * (n2 - 1))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray,
                              num_subsets: int = 100, max_subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float | None]:
  """(mean, std) over subsets of the unbiased MMD² with the kernel k(x, y) = (x·y/d + 1)³.

  Each subset draws m = min(n₁, n₂, max_subset_size) rows of each set without replacement
  (clean-fid's estimator); the diagonal terms are left out, so the mean is ≈ 0, and may be
  negative, for two samples of one distribution. The std is None where there is no spread to
  report: one subset, or both sets whole in every subset (then computed once).
  """
  x_all, y_all = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
  if x_all.ndim != 2 or y_all.ndim != 2 or x_all.shape[1] != y_all.shape[1]:
    raise ValueError(f'need [n, d] features of one d, got {x_all.shape} and {y_all.shape}.')
  d = x_all.shape[1]
  m = min(len(x_all), len(y_all), max_subset_size)
  if m < 2:
    raise ValueError(f'KID needs at least 2 samples per set, got {len(x_all)} and {len(y_all)}.')
  if m == len(x_all) == len(y_all):
    num_subsets = 1
  rng = np.random.default_rng(seed)
  kernel = lambda a, b: (a @ b.T / d + 1) ** 3
  values = []
  for _ in range(num_subsets):
    x = x_all[rng.choice(len(x_all), m, replace=False)]
    y = y_all[rng.choice(len(y_all), m, replace=False)]
    k_xx, k_yy = kernel(x, x), kernel(y, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    values.append(within - 2 * kernel(x, y).sum() / (m * m))
  return float(np.mean(values)), (float(np.std(values)) if num_subsets > 1 else None)


def to_inception_input(images: jax.Array) -> jax.Array:
  """[N, H, W, 3] in [-1, 1] → the network's input: quantised to 8 bits as a saved PNG would be,
  resized bilinearly to 299², scaled x / 128 − 1."""
  pixels = jnp.round(jnp.clip((images.astype(jnp.float32) + 1) * 127.5, 0, 255))
  size = inception.INPUT_SIZE
  pixels = jax.image.resize(pixels, (pixels.shape[0], size, size, pixels.shape[3]), 'bilinear')
  return pixels / 128 - 1


def make_feature_fn(params: dict[str, Any], batch_size: int = 16
                    ) -> Callable[[np.ndarray], np.ndarray]:
  """Returns images in [-1, 1] ([N, H, W, 3], any N, H, W) → [N, 2048] float32 features."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  net = inception.FIDInceptionV3()
  apply = jax.jit(lambda p, x: net.apply({'params': p}, to_inception_input(x)))

  def features(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'need [N, H, W, 3] images, got {images.shape}.')
    out = []
    progress = Progress('Inception features', len(images), 'images')
    for start in range(0, len(images), batch_size):
      batch = images[start:start + batch_size]
      padded = np.concatenate([batch, np.zeros((batch_size - len(batch),) + batch.shape[1:],
                                               np.float32)])  # One shape, one compilation.
      out.append(np.asarray(apply(params, padded))[:len(batch)])
      progress.update(start + len(batch))
    return np.concatenate(out) if out else np.zeros((0, inception.FEATURES), np.float32)

  return features


def sample_size(num_images: int, limit: int) -> int:
  """How many of `num_images` FID/KID see under eval.fid_samples = `limit` (-1: all)."""
  return num_images if limit == -1 else min(num_images, limit)


def sample(images: np.ndarray, limit: int, seed: int) -> np.ndarray:
  """A fixed choice of sample_size(len(images), limit) images, in their order: the same for the
  same (number of images, limit, seed), so the real images' cached features stay valid."""
  size = sample_size(len(images), limit)
  if size == len(images):
    return images
  chosen = np.random.default_rng([seed, len(images), size]).choice(len(images), size,
                                                                   replace=False)
  return images[np.sort(chosen)]


def cached_features(path: Path, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
  """Features of a dataset split, from the .npz at `path` if it was made for `key`, else computed
  and saved there with their mean and covariance (mu, sigma)."""
  path = Path(path)
  if path.is_file():
    with np.load(path) as cached:
      if str(cached['key']) == key:
        return cached['features']
  features = compute()
  mu, sigma = statistics(features)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp.npz')
  np.savez(tmp, key=key, features=features, mu=mu, sigma=sigma)
  tmp.replace(path)
  return features


class Scorer:
  """FID and KID of generated images against real ones, each set cut to a fixed sample of at
  most `max_images` (-1: all; `sample`), with one feature function (`make_feature_fn`) and the
  real images' features cached under `cache_dir` (keyed by their pixels and the weights)."""

  def __init__(self, features: Callable[[np.ndarray], np.ndarray], weights_key: str,
               cache_dir: Path, kid_subsets: int, kid_subset_size: int, seed: int,
               max_images: int):
    self._features = features
    self._weights_key, self._cache_dir = weights_key, Path(cache_dir)
    self._kid = dict(num_subsets=kid_subsets, max_subset_size=kid_subset_size, seed=seed)
    self._max_images, self._seed = max_images, seed

  def _real_features(self, images: np.ndarray, domain: str) -> np.ndarray:
    key = hashlib.sha256(images.tobytes() + str(images.shape).encode()).hexdigest()
    return cached_features(self._cache_dir / f'real_{domain}.npz', f'{key}|{self._weights_key}',
                           lambda: self._features(images))

  def sample(self, images: np.ndarray) -> np.ndarray:
    """The images of a set that `score` sees; translating only these (`score` keeps a set of
    that size whole) gives the same scores for a fraction of the generator passes."""
    return sample(images, self._max_images, self._seed)

  def score(self, fake: np.ndarray, real: np.ndarray,
            domain: str) -> dict[str, float | None]:
    """{'fid', 'kid', 'kid_std'} of `fake` against `real` (the images of `domain`); kid_std
    None where both samples fit one KID subset (kernel_inception_distance)."""
    fake, real = self.sample(fake), self.sample(real)
    real_features = self._real_features(real, domain)
    fake_features = self._features(fake)
    kid, kid_std = kernel_inception_distance(fake_features, real_features, **self._kid)
    return {'fid': fid_from_features(fake_features, real_features), 'kid': kid,
            'kid_std': kid_std}
