"""Dropout with masks drawn a few bits per value.

flax's `nn.Dropout` draws one 32-bit threefry word per masked value. For a keep probability of
k / 2^b with b ≤ 8 (0.5, the reference's rate, needs one bit), b bits of a word decide a value
just as exactly, so one word serves 32 / b values. In the digit configs' small step flax's masks
took a tenth of the thread time (docs/digits_experiments.md); other rates draw as flax does.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

BITS_PER_VALUE = (1, 2, 4, 8)  # Divisors of 32, so a word holds whole values.


def keep_mask(key: jax.Array, keep: float, shape: tuple[int, ...]) -> jax.Array:
  """Boolean mask of `shape`, each value True with probability `keep`, independently.

  Value i reads bits [b·(i mod 32/b), +b) of word i // (32/b) of `jax.random.bits(key)`, as an
  integer below 2^b, and is kept if that integer is below keep·2^b.
  """
  bits = next((b for b in BITS_PER_VALUE if float(keep * 2**b).is_integer()), None)
  if bits is None:
    return jax.random.bernoulli(key, keep, shape)
  size = math.prod(shape)
  per_word = 32 // bits
  words = jax.random.bits(key, (-(-size // per_word),), jnp.uint32)
  shifts = jnp.arange(0, 32, bits, dtype=jnp.uint32)
  values = (words[:, None] >> shifts) & (2**bits - 1)
  return (values.reshape(-1)[:size] < int(keep * 2**bits)).reshape(shape)


class Dropout(nn.Module):
  """`nn.Dropout` (kept values scaled by 1 / keep) with `keep_mask`'s masks, while training."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if not train or self.rate == 0:
      return x
    if self.rate == 1:
      return jnp.zeros_like(x)
    keep = 1.0 - self.rate
    mask = keep_mask(self.make_rng('dropout'), keep, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))
