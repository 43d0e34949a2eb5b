"""Losses as pure functions of arrays: no flax, no state, differentiable everywhere.

`prediction`s are discriminator logits. `vanilla` is BCE-with-logits written in its stable
form, so it stays finite at any logit (the seed's `D_loss 100 / G_loss 0` came from a BCE on
clamped probabilities).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

GAN_MODES = ('lsgan', 'vanilla', 'wgangp', 'hinge')


def _check_mode(mode: str) -> None:
  if mode not in GAN_MODES:
    raise ValueError(f'unknown gan_mode {mode!r}; expected one of {", ".join(GAN_MODES)}')


def gan_loss(prediction: jax.Array, target_is_real: bool, mode: str) -> jax.Array:
  """The adversarial loss of logits against an all-real or all-fake target.

  lsgan: mean((p - t)²) with t in {1, 0}; vanilla: mean BCE(sigmoid(p), t);
  wgangp: -mean(p) for real, +mean(p) for fake; hinge (discriminator side): mean(relu(1 ∓ p)).
  For a generator under hinge use `generator_gan_loss`, which is -mean(p).
  """
  _check_mode(mode)
  prediction = prediction.astype(jnp.float32)
  if mode == 'lsgan':
    return jnp.mean(jnp.square(prediction - (1.0 if target_is_real else 0.0)))
  if mode == 'vanilla':
    # -log σ(p) = softplus(-p) and -log(1 - σ(p)) = softplus(p): exact and overflow-free.
    return jnp.mean(jax.nn.softplus(-prediction if target_is_real else prediction))
  if mode == 'hinge':
    return jnp.mean(jax.nn.relu(1.0 - prediction if target_is_real else 1.0 + prediction))
  return -jnp.mean(prediction) if target_is_real else jnp.mean(prediction)


def generator_gan_loss(prediction_on_fake: jax.Array, mode: str) -> jax.Array:
  """What a generator minimises: its fakes judged real (hinge uses -mean, as is standard)."""
  _check_mode(mode)
  if mode == 'hinge':
    return -jnp.mean(prediction_on_fake.astype(jnp.float32))
  return gan_loss(prediction_on_fake, True, mode)


def discriminator_loss(pred_real: jax.Array, pred_fake: jax.Array, mode: str) -> jax.Array:
  """½ (loss on real + loss on fake), the reference's halving to slow D relative to G."""
  return 0.5 * (gan_loss(pred_real, True, mode) + gan_loss(pred_fake, False, mode))


def gradient_penalty(d_apply: Callable[[jax.Array], jax.Array], real: jax.Array,
                     fake: jax.Array, alpha: jax.Array, lambda_gp: float = 10.0) -> jax.Array:
  """WGAN-GP: λ·mean((‖∇D(x̂)‖₂ − 1)²) on the per-sample mixes x̂ = α·real + (1 − α)·fake,
  with α [batch] drawn uniformly by the caller (the step draws it for the global batch).

  `d_apply` maps images to logits with the discriminator's parameters already bound, so the
  penalty's gradient w.r.t. those parameters flows through this function.
  """
  alpha = alpha.astype(real.dtype).reshape((real.shape[0],) + (1,) * (real.ndim - 1))
  mixed = alpha * real + (1.0 - alpha) * fake
  grads = jax.grad(lambda x: jnp.sum(d_apply(x)))(mixed)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1) + 1e-16)
  return lambda_gp * jnp.mean(jnp.square(norms - 1.0))


def r1_penalty(d_apply: Callable[[jax.Array], jax.Array], real: jax.Array,
               gamma: float) -> jax.Array:
  """R1 (Mescheder et al. 2018): γ/2 · mean ‖∇ₓD(x)‖² on real images; keeps D from sharpening
  around the data, which it otherwise does once the lr decays."""
  grads = jax.grad(lambda x: jnp.sum(d_apply(x).astype(jnp.float32)))(real)
  return 0.5 * gamma * jnp.mean(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1))


def l1_loss(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)))


def colour_statistics_loss(images: jax.Array, references: jax.Array,
                           weights: jax.Array) -> jax.Array:
  """Mean over images and channels of weight·(|μ(x) − μ(r)| + |σ(x) − σ(r)|), μ and σ an
  image's per-channel mean and std over its pixels: G_AB(a, r) must take its colours from its
  style reference r, so it draws as many backgrounds as the references show, not one texture.
  `weights` [b]: 0 for an image without a reference."""
  stats = lambda x: jnp.stack([jnp.mean(x, (1, 2)), jnp.std(x, (1, 2))])
  gap = jnp.abs(stats(images.astype(jnp.float32)) - stats(references.astype(jnp.float32)))
  return jnp.mean(weights[:, None] * jnp.sum(gap, 0))


def cycle_consistency_loss(real_a: jax.Array, rec_a: jax.Array, real_b: jax.Array,
                           rec_b: jax.Array, lambda_a: float, lambda_b: float
                           ) -> tuple[jax.Array, jax.Array]:
  """(λ_A·|F(G(A)) − A|₁, λ_B·|G(F(B)) − B|₁), returned apart so both can be logged."""
  return lambda_a * l1_loss(rec_a, real_a), lambda_b * l1_loss(rec_b, real_b)


def identity_loss(real_a: jax.Array, same_a: jax.Array, real_b: jax.Array, same_b: jax.Array,
                  lambda_a: float, lambda_b: float, lambda_identity: float
                  ) -> tuple[jax.Array, jax.Array]:
  """(λ_idt·λ_A·|F(A) − A|₁, λ_idt·λ_B·|G(B) − B|₁): a generator fed an image of its own
  output domain should leave it alone, which keeps colours from drifting.

  Terms are named by the domain of the image (`same_a` = G_BA(A)); the reference names them
  by generator instead (its idt_A is G_A(B)).
  """
  return (lambda_identity * lambda_a * l1_loss(same_a, real_a),
          lambda_identity * lambda_b * l1_loss(same_b, real_b))


def semantic_cycle_loss(features: Callable[[jax.Array], dict[str, jax.Array]], real_a: jax.Array,
                        rec_a: jax.Array, real_b: jax.Array, rec_b: jax.Array,
                        weight: float) -> jax.Array:
  """Seed S3's semantic cycle loss: weight·Σ over both domains of the mean over feature layers
  of |φ(x) − φ(F(G(x)))|₁, with φ a fixed feature network (VGG16 in S3).

  One batched call of `features` serves all four image sets; the targets φ(x) are constants.
  """
  outputs = features(jnp.concatenate([real_a, rec_a, real_b, rec_b]))
  total = 0.0
  for f in outputs.values():
    f_real_a, f_rec_a, f_real_b, f_rec_b = jnp.split(f, [len(real_a), len(real_a) + len(rec_a),
                                                         len(real_a) + len(rec_a) + len(real_b)])
    total += (l1_loss(jax.lax.stop_gradient(f_real_a), f_rec_a)
              + l1_loss(jax.lax.stop_gradient(f_real_b), f_rec_b))
  return weight * total / len(outputs)


def label_consistency_loss(logits: Callable[[jax.Array], jax.Array], real: jax.Array,
                           rec: jax.Array, weight: float) -> jax.Array:
  """weight·CE(f(F(G(x))), argmax f(x)), f a fixed classifier: the round trip must keep the
  class that f reads in x (CyCADA's semantic consistency, on the cycle). Pixel L1 barely
  notices a stroke that turns a 4 into a 9; a classifier does. The targets are constants."""
  targets = jnp.argmax(jax.lax.stop_gradient(logits(real)), -1)
  return weight * jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits(rec), targets))


def confident_label_loss(logits: Callable[[jax.Array], jax.Array], images: jax.Array,
                          threshold: float, weight: float) -> jax.Array:
  """weight·mean over the batch of CE(f(x), argmax f(x)) where max p(y|x) ≥ threshold, else 0:
  self-training on translations whose labels nobody knows. Where f already reads a digit
  confidently, the translation is pushed to show that digit more clearly; unsure images add
  nothing, so a wrong guess is not reinforced. Targets and mask are constants."""
  out = logits(images)
  fixed = jax.lax.stop_gradient(out)
  confident = jnp.max(jax.nn.softmax(fixed), -1) >= threshold
  ce = optax.softmax_cross_entropy_with_integer_labels(out, jnp.argmax(fixed, -1))
  return weight * jnp.mean(jnp.where(confident, ce, 0.0))


def patch_nce_loss(feat_q: jax.Array, feat_k: jax.Array, temperature: float = 0.07) -> jax.Array:
  """PatchNCE (Park et al., "Contrastive Learning for Unpaired Image-to-Image Translation",
  2020): each query patch of G(x) must pick its own location's key patch of x out of the keys
  of every location of the same image.

  feat_q, feat_k: [B, P, C], L2-normalised; the keys get no gradient. A query's logits are its
  positive (its own key) followed by its P negatives (all keys of its image, its own key set to
  -10 as the reference does), divided by `temperature`. Returns the mean cross-entropy over
  the B·P queries with the positive as the target.
  """
  feat_k = jax.lax.stop_gradient(feat_k)
  positive = jnp.sum(feat_q * feat_k, -1, keepdims=True)
  negatives = jnp.einsum('bpc,bqc->bpq', feat_q, feat_k)
  negatives = jnp.where(jnp.eye(feat_q.shape[1], dtype=bool), -10.0, negatives)
  logits = jnp.concatenate([positive, negatives], -1) / temperature
  return -jnp.mean(jax.nn.log_softmax(logits, -1)[..., 0])
