"""Every loss against numbers worked out by hand, and finite at extreme logits."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclegan_jax import losses

P = jnp.array([0.5, -1.0, 3.0])  # Logits used by most cases below.
Q = jnp.array([0.0, 2.0])

# Hand-computed values; softplus(x) = log(1 + e^x), ln 2 = 0.693147, ln(1 + e^-2) = 0.126928,
# ln(1 + e^2) = 2.126928.
EXPECTED_GAN = {
    # lsgan: mean((p - 1)^2) = (0.25 + 4 + 4) / 3;  mean(p^2) = (0.25 + 1 + 9) / 3.
    ('lsgan', 'P', True): 8.25 / 3,
    ('lsgan', 'P', False): 10.25 / 3,
    # On Q: real (1 + 1) / 2 = 1; fake (0 + 4) / 2 = 2.
    ('lsgan', 'Q', True): 1.0,
    ('lsgan', 'Q', False): 2.0,
    # vanilla real = mean(softplus(-q)) = (ln 2 + ln(1 + e^-2)) / 2 = 0.410038;
    # vanilla fake = mean(softplus(q)) = (ln 2 + ln(1 + e^2)) / 2 = 1.410038.
    ('vanilla', 'Q', True): 0.4100375958,
    ('vanilla', 'Q', False): 1.4100375958,
    # wgangp: -mean(p) = -(0.5 - 1 + 3) / 3 = -2.5 / 3 for real, +2.5 / 3 for fake.
    ('wgangp', 'P', True): -2.5 / 3,
    ('wgangp', 'P', False): 2.5 / 3,
    # hinge: real mean(relu(1 - p)) = (0.5 + 2 + 0) / 3; fake mean(relu(1 + p)) = (1.5 + 0 + 4) / 3.
    ('hinge', 'P', True): 2.5 / 3,
    ('hinge', 'P', False): 5.5 / 3,
}


@pytest.mark.parametrize('mode, which, target', sorted(EXPECTED_GAN))
def test_gan_loss_hand_computed(mode, which, target):
  prediction = {'P': P, 'Q': Q}[which]
  value = losses.gan_loss(prediction, target, mode)
  assert value.shape == ()
  assert float(value) == pytest.approx(EXPECTED_GAN[(mode, which, target)], rel=1e-6)


def test_gan_loss_works_on_patch_maps():
  # A (N, H, W, 1) logits map: the mean is over every patch. lsgan fake: mean(p^2) = 4 / 1 = 4 for
  # a map of 2s.
  assert float(losses.gan_loss(jnp.full((2, 3, 3, 1), 2.0), False, 'lsgan')) == 4.0
  assert float(losses.gan_loss(jnp.full((2, 3, 3, 1), 2.0, jnp.bfloat16), True, 'lsgan')) == 1.0


@pytest.mark.parametrize('mode, expected', [
    ('lsgan', 8.25 / 3),  # Fakes judged real: as gan_loss(p, True).
    ('vanilla', 0.6119753),  # (softplus(-0.5) + softplus(1) + softplus(-3)) / 3, below.
    ('wgangp', -2.5 / 3),  # -mean(p).
    ('hinge', -2.5 / 3),  # -mean(p), not mean(relu(1 - p)) = 2.5 / 3.
])
def test_generator_gan_loss(mode, expected):
  if mode == 'vanilla':  # Written out: ln(1 + e^-0.5) + ln(1 + e^1) + ln(1 + e^-3), over 3.
    assert expected == pytest.approx((math.log1p(math.exp(-0.5)) + math.log1p(math.e)
                                      + math.log1p(math.exp(-3))) / 3, rel=1e-6)
  assert float(losses.generator_gan_loss(P, mode)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize('mode, expected', [
    ('lsgan', 0.5 * (8.25 / 3 + 2.0)),  # Real on P, fake on Q.
    ('vanilla', 0.5 * (0.6119753 + 1.4100376)),
    ('wgangp', 0.5 * (-2.5 / 3 + 1.0)),  # -mean(P) + mean(Q) = -0.8333 + 1.
    ('hinge', 0.5 * (2.5 / 3 + 2.0)),  # mean(relu(1 + Q)) = (1 + 3) / 2 = 2.
])
def test_discriminator_loss_is_half_real_plus_fake(mode, expected):
  assert float(losses.discriminator_loss(P, Q, mode)) == pytest.approx(expected, rel=1e-6)
  halved = 0.5 * (losses.gan_loss(P, True, mode) + losses.gan_loss(Q, False, mode))
  assert float(losses.discriminator_loss(P, Q, mode)) == pytest.approx(float(halved), rel=1e-7)


def test_l1_loss():
  # (|1 - 0| + |2 - 4| + |3 - 3|) / 3 = 1.
  assert float(losses.l1_loss(jnp.array([1.0, 2.0, 3.0]), jnp.array([0.0, 4.0, 3.0]))) == 1.0
  assert float(losses.l1_loss(jnp.ones((2, 4, 4, 3), jnp.bfloat16), jnp.zeros((2, 4, 4, 3)))) == 1.0


def test_colour_statistics_loss_on_hand_made_images():
  """Image 0: channel means 1 and 0 against 0 and 0 (|Δμ| 1 + 0), stds 1 and 0 against 0 and 2
  (|Δσ| 1 + 2), weight 1; image 1 differs as much but weighs 0. Mean over 2 images × 2
  channels: (1 + 0 + 1 + 2) / 4."""
  images = np.zeros((2, 2, 1, 2), np.float32)
  images[0, :, 0, 0] = [0.0, 2.0]  # Mean 1, std 1.
  references = np.zeros_like(images)
  references[0, :, 0, 1] = [-2.0, 2.0]  # Mean 0, std 2.
  references[1] = 5.0
  loss = losses.colour_statistics_loss(jnp.asarray(images), jnp.asarray(references),
                                       jnp.array([1.0, 0.0]))
  assert float(loss) == pytest.approx(1.0)


def test_cycle_consistency_weighting():
  real_a, real_b = jnp.zeros((2, 2)), jnp.zeros((2, 2))
  rec_a = jnp.full((2, 2), 0.5)  # |F(G(A)) - A|_1 = 0.5.
  rec_b = jnp.array([[1.0, -1.0], [3.0, 1.0]])  # |G(F(B)) - B|_1 = 6 / 4 = 1.5.
  loss_a, loss_b = losses.cycle_consistency_loss(real_a, rec_a, real_b, rec_b, lambda_a=10.0,
                                                 lambda_b=2.0)
  assert float(loss_a) == pytest.approx(10.0 * 0.5)  # λ_A · 0.5.
  assert float(loss_b) == pytest.approx(2.0 * 1.5)  # λ_B · 1.5.


def test_identity_loss_weighting():
  # λ_idt·(λ_B·|G(B) − B|₁ + λ_A·|F(A) − A|₁), G = G_AB and F = G_BA; terms named by domain.
  real_a, real_b = jnp.zeros((2, 2)), jnp.ones((2, 2))
  same_a = jnp.full((2, 2), 2.0)  # F(A) = G_BA(A): |F(A) − A|₁ = 2.
  same_b = jnp.full((2, 2), 1.5)  # G(B) = G_AB(B): |G(B) − B|₁ = 0.5.
  loss_a, loss_b = losses.identity_loss(real_a, same_a, real_b, same_b, lambda_a=10.0,
                                        lambda_b=2.0, lambda_identity=0.5)
  assert float(loss_a) == pytest.approx(0.5 * 10.0 * 2.0)  # λ_idt · λ_A · 2 = 10.
  assert float(loss_b) == pytest.approx(0.5 * 2.0 * 0.5)  # λ_idt · λ_B · 0.5 = 0.5.


@pytest.mark.parametrize('mode', losses.GAN_MODES)
def test_extreme_logits_give_finite_values_and_gradients(mode):
  for logit in (-100.0, 100.0):
    p = jnp.full((1, 2, 2, 1), logit)
    for fn in (lambda p: losses.gan_loss(p, True, mode),
               lambda p: losses.gan_loss(p, False, mode),
               lambda p: losses.generator_gan_loss(p, mode),
               lambda p: losses.discriminator_loss(p, -p, mode)):
      value, grad = jax.value_and_grad(fn)(p)
      assert np.isfinite(float(value)), (mode, logit)
      assert np.all(np.isfinite(grad)), (mode, logit)


def test_vanilla_at_extreme_logits():
  low, high = jnp.array([-100.0]), jnp.array([100.0])
  real = lambda p: losses.gan_loss(p, True, 'vanilla')
  fake = lambda p: losses.gan_loss(p, False, 'vanilla')
  # -log σ(-100) = softplus(100) = 100 + ln(1 + e^-100) = 100; -log σ(100) = 3.7e-44 ≈ 0.
  assert float(real(low)) == pytest.approx(100.0, rel=1e-7)
  assert float(real(high)) == pytest.approx(0.0, abs=1e-30)
  assert float(fake(high)) == pytest.approx(100.0, rel=1e-7)
  assert float(fake(low)) == pytest.approx(0.0, abs=1e-30)
  # d/dp softplus(-p) = -σ(-p): -1 at p = -100 (not 0: the loss does not saturate), ~0 at 100.
  assert float(jax.grad(real)(low)[0]) == pytest.approx(-1.0, rel=1e-6)
  assert float(jax.grad(real)(high)[0]) == pytest.approx(0.0, abs=1e-30)
  assert float(jax.grad(fake)(high)[0]) == pytest.approx(1.0, rel=1e-6)


def test_unknown_mode_is_rejected():
  for fn in (lambda: losses.gan_loss(P, True, 'wgan'), lambda: losses.generator_gan_loss(P, 'bce'),
             lambda: losses.discriminator_loss(P, Q, 'least_squares')):
    with pytest.raises(ValueError, match='unknown gan_mode') as info:
      fn()
    for mode in ('lsgan', 'vanilla', 'wgangp', 'hinge'):
      assert mode in str(info.value)


# ----------------------------------------------------------------------------------------------
# WGAN-GP gradient penalty.

ALPHA = jnp.array([0.1, 0.5, 0.9])  # Per-sample mixes of real and fake, as the step draws them.


def _linear_d(w):
  return lambda x: jnp.sum(x * w, axis=(1, 2, 3))  # One logit per sample; ∇_x D = w.


def _images(seed, shape=(3, 4, 4, 2)):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def test_gradient_penalty_of_linear_critic():
  w = _images(0, (4, 4, 2))
  w = 3.0 * w / jnp.linalg.norm(w)  # ‖w‖ = 3, so every sample's penalty is (3 - 1)^2 = 4.
  penalty = losses.gradient_penalty(_linear_d(w), _images(1), _images(2), ALPHA,
                                     lambda_gp=10.0)
  assert float(penalty) == pytest.approx(10.0 * 4.0, rel=1e-5)
  unit = w / 3.0  # ‖w‖ = 1: no penalty.
  assert float(losses.gradient_penalty(_linear_d(unit), _images(1), _images(2), ALPHA)) == (
      pytest.approx(0.0, abs=1e-10))


def test_gradient_penalty_gradient_flows_to_critic_parameters():
  w = _images(0, (4, 4, 2))
  norm = float(jnp.linalg.norm(w))
  grad = jax.grad(lambda w: losses.gradient_penalty(_linear_d(w), _images(1), _images(2), ALPHA,
                                                    lambda_gp=10.0))(w)
  # d/dw λ(‖w‖ - 1)^2 = 2λ(‖w‖ - 1) w / ‖w‖.
  np.testing.assert_allclose(grad, 2 * 10.0 * (norm - 1) * w / norm, rtol=1e-4, atol=1e-6)


def test_r1_penalty_of_linear_and_quadratic_critics():
  w = _images(0, (4, 4, 2))
  w = 3.0 * w / jnp.linalg.norm(w)  # ∇ₓD = w everywhere: γ/2 · ‖w‖² = γ/2 · 9.
  assert float(losses.r1_penalty(_linear_d(w), _images(1), gamma=2.0)) == pytest.approx(
      9.0, rel=1e-5)
  # D(x) = ½‖x‖² has ∇ₓD = x: γ/2 · mean of ‖x‖² over the real samples, here 1 and 4.
  d = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))
  real = jnp.stack([jnp.full((2, 2, 1), 0.5), jnp.full((2, 2, 1), 1.0)])
  assert float(losses.r1_penalty(d, real, gamma=1.0)) == pytest.approx(0.5 * 2.5, rel=1e-6)


def test_r1_penalty_gradient_flows_to_critic_parameters():
  w = _images(0, (4, 4, 2))
  grad = jax.grad(lambda w: losses.r1_penalty(_linear_d(w), _images(1), gamma=10.0))(w)
  np.testing.assert_allclose(grad, 10.0 * w, rtol=1e-5)  # d/dw γ/2 ‖w‖² = γ w.


def test_gradient_penalty_evaluates_between_real_and_fake():
  # D(x) = ½‖x‖² has ∇D(x̂) = x̂. With real = fake = c, x̂ = c whatever the mix: λ(‖c‖ - 1)^2.
  d = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))
  c = jnp.full((2, 2, 2, 2), 0.25)  # 8 values per sample: ‖c‖ = 0.25 · √8.
  expected = 10.0 * (0.25 * math.sqrt(8) - 1) ** 2
  alpha = jnp.array([0.25, 0.5])
  assert float(losses.gradient_penalty(d, c, c, alpha)) == pytest.approx(expected, rel=1e-5)
  # real = 0, fake = 1: x̂ = (1 - α)·1 per sample, so ‖∇‖ = (1 - α)·√8: 0.75·√8 and 0.5·√8.
  zeros, ones = jnp.zeros((2, 2, 2, 2)), jnp.ones((2, 2, 2, 2))
  penalty = float(losses.gradient_penalty(d, zeros, ones, alpha, lambda_gp=1.0))
  expected = ((0.75 * math.sqrt(8) - 1) ** 2 + (0.5 * math.sqrt(8) - 1) ** 2) / 2
  assert penalty == pytest.approx(expected, rel=1e-5)


def test_patch_nce_on_hand_made_features():
  """Two patches of unit vectors e0 and (0.93, sin): q = k, so each positive logit is 1, the
  other key's is 0.93 and the query's own key among the negatives is set to -10. At τ = 0.07
  each patch's loss is log(1 + e^((0.93 - 1)/τ) + e^((-10 - 1)/τ)) = log(1 + e^-1 + e^-157)."""
  q = jnp.array([[[1.0, 0.0], [0.93, math.sqrt(1 - 0.93**2)]]])
  expected = math.log(1 + math.exp(-1) + math.exp(-11 / 0.07))
  assert float(losses.patch_nce_loss(q, q)) == pytest.approx(expected, rel=1e-5)
  assert float(losses.patch_nce_loss(q, q, temperature=1.0)) == pytest.approx(
      math.log(1 + math.exp(-0.07) + math.exp(-11)), rel=1e-5)


def test_patch_nce_means_over_images_and_patches_and_keys_get_no_gradient():
  """Image 2's query equals its key but for patch order, so every positive is 0 and one negative
  is 1: loss log(1 + e^(1/τ) + e^(-10/τ)); the mean over the 4 patches of 2 images."""
  tau = 0.5
  aligned = jnp.eye(2)[None]
  swapped = jnp.eye(2)[::-1][None]
  q, k = jnp.concatenate([aligned, swapped]), jnp.concatenate([aligned, aligned])
  good = math.log(1 + math.exp(-11 / tau) + math.exp(-1 / tau))
  bad = math.log(1 + math.exp(1 / tau) + math.exp(-10 / tau))
  assert float(losses.patch_nce_loss(q, k, tau)) == pytest.approx((good + bad) / 2, rel=1e-5)
  grad_k = jax.grad(lambda k: losses.patch_nce_loss(q, k, tau))(k)
  np.testing.assert_array_equal(grad_k, np.zeros_like(k))
  assert float(jnp.abs(jax.grad(lambda q: losses.patch_nce_loss(q, k, tau))(q)).max()) > 0


def test_confident_label_loss_counts_only_confident_images():
  """The 'classifier' is the identity on [n, 2] logits. [3, 0] reads class 0 at p = 0.953
  (≥ 0.9): CE = log(1 + e⁻³); [0.5, 0] reads p = 0.62 and adds 0; the mean is over both."""
  images = jnp.array([[3.0, 0.0], [0.5, 0.0]])
  value = losses.confident_label_loss(lambda x: x, images, 0.9, 2.0)
  assert float(value) == pytest.approx(2 * math.log1p(math.exp(-3)) / 2, rel=1e-6)
  grad = jax.grad(lambda x: losses.confident_label_loss(lambda y: y, x, 0.9, 2.0))(images)
  p = 1 / (1 + math.exp(-3))  # d CE / d logits = softmax − onehot, times weight / n.
  np.testing.assert_allclose(grad, [[p - 1, 1 - p], [0.0, 0.0]], rtol=1e-5)
  # Below both images' confidence everything counts; the target is each one's own argmax.
  everything = losses.confident_label_loss(lambda x: x, images, 0.5, 1.0)
  assert float(everything) == pytest.approx(
      (math.log1p(math.exp(-3)) + math.log1p(math.exp(-0.5))) / 2, rel=1e-6)


def test_label_consistency_on_hand_made_logits():
  """The 'classifier' is the identity on [n, 10] logits: targets are argmax of real."""
  real = jnp.array([[0.0, 5.0] + [0.0] * 8, [9.0] + [0.0] * 9])
  uniform = jnp.zeros((2, 10))
  assert float(losses.label_consistency_loss(lambda x: x, real, uniform, 2.0)) == (
      pytest.approx(2 * np.log(10), rel=1e-6))
  swapped = real[::-1]  # Each rec now puts its mass on the other image's class.
  expected = np.mean([-jax.nn.log_softmax(swapped[0])[1], -jax.nn.log_softmax(swapped[1])[0]])
  assert float(losses.label_consistency_loss(lambda x: x, real, swapped, 1.0)) == (
      pytest.approx(float(expected), rel=1e-6))
  grads = jax.grad(lambda r, c: losses.label_consistency_loss(lambda x: x, r, c, 1.0),
                   argnums=(0, 1))(real, uniform)
  assert not np.any(grads[0]) and np.any(grads[1])  # Targets are constants.
