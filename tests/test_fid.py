"""Fréchet distance, KID and the feature cache on small hand-made inputs (no network weights)."""

import numpy as np
import pytest
import scipy.linalg

from cyclegan_jax.metrics import fid


def gaussian_closed_form(mu1, var1, mu2, var2):
  """FID of N(μ₁, Q diag(v₁) Qᵀ) and N(μ₂, Q diag(v₂) Qᵀ): covariances that commute."""
  return np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))


def test_frechet_distance_equals_closed_form_for_diagonal_covariances():
  mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, -0.5])
  var1, var2 = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 9.0])
  # |Δμ|² = 1 + 0 + 4 + 1 = 6; Σ(v₁ + v₂ − 2√(v₁v₂)) = 1 + 1 + 0.25 + 0 = 2.25.
  assert gaussian_closed_form(mu1, var1, mu2, var2) == 8.25
  got = fid.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
  assert got == pytest.approx(8.25, rel=1e-6)


def test_frechet_distance_equals_closed_form_for_rotated_covariances():
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(32, 32)))
  var1, var2 = rng.uniform(0.1, 5, 32), rng.uniform(0.1, 5, 32)
  mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
  got = fid.frechet_distance(mu1, q * var1 @ q.T, mu2, q * var2 @ q.T)
  assert got == pytest.approx(gaussian_closed_form(mu1, var1, mu2, var2), rel=1e-6)


def test_frechet_distance_matches_pytorch_fid_formula():
  """pytorch-fid: ‖Δμ‖² + tr Σ₁ + tr Σ₂ − 2 tr sqrtm(Σ₁Σ₂), with scipy's sqrtm."""
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(200, 16)), rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
  (mu1, s1), (mu2, s2) = fid.statistics(a), fid.statistics(b)
  reference = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)
  assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize('n1, n2', [(20, 30), (300, 200)])  # Fewer and more rows than d.
def test_fid_from_features_equals_frechet_distance_of_statistics(n1, n2):
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(n1, 64)), 1.5 * rng.normal(size=(n2, 64)) + 0.3
  expected = fid.frechet_distance(*fid.statistics(a), *fid.statistics(b))
  assert fid.fid_from_features(a, b) == pytest.approx(expected, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero():
  x = np.random.default_rng(3).normal(size=(50, 2048)).astype(np.float32)
  assert abs(fid.fid_from_features(x, x)) < 1e-8 * np.trace(fid.statistics(x)[1])


def test_mismatched_statistics_are_named():
  with pytest.raises(ValueError, match=r'means \(3,\), \(4,\)'):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match=r'N >= 2'):
    fid.statistics(np.zeros((1, 5)))


def brute_force_mmd2(x, y):
  """Unbiased MMD² with k(a, b) = (a·b/d + 1)³, one term at a time."""
  d, m = x.shape[1], len(x)
  k = lambda a, b: (a @ b / d + 1) ** 3
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
  return xx + yy - 2 * xy


def test_kid_with_whole_sets_equals_brute_force_mmd():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 1
  mean, std = fid.kernel_inception_distance(x, y, num_subsets=3, max_subset_size=6)
  assert mean == pytest.approx(brute_force_mmd2(x, y), rel=1e-12)
  assert std is None  # Every subset would be both whole sets: no spread to report.
  assert fid.kernel_inception_distance(x, y, num_subsets=1, max_subset_size=4)[1] is None


def test_kid_over_subsets_is_the_mean_and_std_of_their_mmds():
  """Subsets of 4 from sets of 6 and 9, drawn as the estimator draws them."""
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(6, 3)), rng.normal(size=(9, 3)) + 1
  draw = np.random.default_rng(11)
  mmds = [brute_force_mmd2(x[draw.choice(6, 4, replace=False)], y[draw.choice(9, 4, replace=False)])
          for _ in range(5)]
  mean, std = fid.kernel_inception_distance(x, y, num_subsets=5, max_subset_size=4, seed=11)
  assert (mean, std) == pytest.approx((np.mean(mmds), np.std(mmds)), rel=1e-10)
  assert std > 0.01 * abs(mean)


def test_kid_is_unbiased_for_one_distribution():
  """Averaged over independent sample pairs, KID of one distribution is 0 within 3 standard
  errors, while a shifted distribution is far above that."""
  rng = np.random.default_rng(5)
  same = [fid.kernel_inception_distance(rng.normal(size=(40, 16)), rng.normal(size=(40, 16)),
                                        num_subsets=1)[0] for _ in range(200)]
  shifted = fid.kernel_inception_distance(rng.normal(size=(40, 16)),
                                          rng.normal(size=(40, 16)) + 0.5, num_subsets=1)[0]
  standard_error = np.std(same) / np.sqrt(len(same))
  assert abs(np.mean(same)) < 3 * standard_error
  assert shifted > 20 * standard_error


def test_kid_rejects_bad_input():
  with pytest.raises(ValueError, match='at least 2 samples'):
    fid.kernel_inception_distance(np.zeros((1, 4)), np.zeros((5, 4)))
  with pytest.raises(ValueError, match=r'\(5, 4\) and \(5, 3\)'):
    fid.kernel_inception_distance(np.zeros((5, 4)), np.zeros((5, 3)))


def test_inception_input_is_quantised_resized_and_scaled():
  images = np.full((2, 8, 8, 3), 0.5, np.float32)  # (0.5 + 1)·127.5 = 191.25 → 191.
  out = np.asarray(fid.to_inception_input(images))
  assert out.shape == (2, 299, 299, 3)
  np.testing.assert_allclose(out, 191 / 128 - 1, rtol=1e-6)


def test_cached_features_compute_once_per_key(tmp_path):
  calls = []
  features = np.arange(12, dtype=np.float32).reshape(4, 3)

  def compute():
    calls.append(1)
    return features

  path = tmp_path / 'stats' / 'real_a.npz'
  np.testing.assert_array_equal(fid.cached_features(path, 'k1', compute), features)
  np.testing.assert_array_equal(fid.cached_features(path, 'k1', compute), features)
  assert len(calls) == 1
  with np.load(path) as cached:
    np.testing.assert_allclose(cached['mu'], features.mean(0))
    np.testing.assert_allclose(cached['sigma'], np.cov(features, rowvar=False))
  fid.cached_features(path, 'k2', compute)  # Other images or weights: recomputed.
  assert len(calls) == 2


def test_sample_is_a_fixed_seeded_choice_in_order():
  images = np.arange(100)[:, None, None, None] * np.ones((1, 2, 2, 3))
  chosen = fid.sample(images, 30, seed=0)
  assert chosen.shape == (30, 2, 2, 3)
  firsts = chosen[:, 0, 0, 0]
  assert np.all(np.diff(firsts) > 0) and set(firsts) <= set(range(100))  # Distinct, in order.
  np.testing.assert_array_equal(fid.sample(images, 30, seed=0), chosen)  # Fixed.
  assert not np.array_equal(fid.sample(images, 30, seed=1), chosen)
  assert fid.sample(images, -1, seed=0) is images and fid.sample(images, 100, seed=0) is images
  assert [fid.sample_size(100, n) for n in (-1, 2, 100, 500)] == [100, 2, 100, 100]


def test_scorer_scores_fixed_samples_of_both_sets(tmp_path):
  """eval.fid_samples: the features are computed for the sample only, and the scores are those
  of the sampled features."""
  rng = np.random.default_rng(0)
  fake, real = rng.normal(size=(50, 4, 4, 3)), rng.normal(1, 1, size=(40, 4, 4, 3))
  seen = []

  def features(images):
    seen.append(len(images))
    return images.reshape(len(images), -1)[:, :6]

  scorer = fid.Scorer(features, 'weights', tmp_path, kid_subsets=3, kid_subset_size=100, seed=7,
                      max_images=20)
  scores = scorer.score(fake, real, 'b')
  assert sorted(seen) == [20, 20]
  fake_features, real_features = (features(fid.sample(x, 20, 7)) for x in (fake, real))
  assert scores['fid'] == pytest.approx(fid.fid_from_features(fake_features, real_features))
  kid = fid.kernel_inception_distance(fake_features, real_features, 3, 100, 7)
  assert (scores['kid'], scores['kid_std']) == pytest.approx(kid)
  scorer.score(fake, real, 'b')
  assert sorted(seen) == [20, 20, 20, 20, 20]  # The real sample's features came from the cache.
