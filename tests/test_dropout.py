"""models/dropout.py: masks of a few bits per value, exact keep probabilities, and flax's
behaviour for every other rate."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclegan_jax.models import dropout

KEY = jax.random.key(3)


def test_a_half_keep_reads_one_bit_of_each_word_lowest_first():
  word = int(jax.random.bits(KEY, (1,), jnp.uint32)[0])
  expected = [(word >> i) & 1 == 0 for i in range(32)]
  assert dropout.keep_mask(KEY, 0.5, (2, 16)).reshape(-1).tolist() == expected


def test_a_quarter_keep_reads_two_bits_of_each_word():
  word = int(jax.random.bits(KEY, (1,), jnp.uint32)[0])
  expected = [(word >> (2 * i)) & 3 < 1 for i in range(16)]
  assert dropout.keep_mask(KEY, 0.25, (16,)).tolist() == expected


def test_a_shape_that_leaves_part_of_a_word_uses_its_first_bits():
  assert (dropout.keep_mask(KEY, 0.5, (5, 7)).reshape(-1).tolist()
          == dropout.keep_mask(KEY, 0.5, (64,))[:35].tolist())


@pytest.mark.parametrize('keep', [0.5, 0.75, 0.25, 3 / 256])
def test_each_value_is_kept_with_the_keep_probability(keep):
  mask = np.asarray(dropout.keep_mask(KEY, keep, (64, 32, 32)))
  standard_error = np.sqrt(keep * (1 - keep) / mask.size)
  assert abs(mask.mean() - keep) < 4 * standard_error
  # Neighbouring values come from neighbouring bits of one word: they must not move together.
  pairs = mask.reshape(-1, 2)
  assert abs(np.mean(pairs[:, 0] & pairs[:, 1]) - keep**2) < 4 * standard_error


def test_a_rate_without_a_few_bits_form_draws_as_flax_does():
  x = jnp.arange(1.0, 1 + 4 * 8 * 8 * 16).reshape(4, 8, 8, 16)
  ours = dropout.Dropout(0.3).apply({}, x, True, rngs={'dropout': KEY})
  flax = nn.Dropout(0.3, deterministic=False).apply({}, x, rngs={'dropout': KEY})
  np.testing.assert_array_equal(ours, flax)


def test_kept_values_are_scaled_by_one_over_keep_and_the_rest_are_zero():
  x = jnp.full((8, 8), 3.0)
  y = np.asarray(dropout.Dropout(0.75).apply({}, x, True, rngs={'dropout': KEY}))
  assert set(np.unique(y)) == {0.0, 12.0}


def test_evaluation_and_rate_zero_return_the_input_and_rate_one_zeros():
  x = jnp.arange(6.0).reshape(2, 3)
  np.testing.assert_array_equal(dropout.Dropout(0.5).apply({}, x, False), x)
  np.testing.assert_array_equal(dropout.Dropout(0.0).apply({}, x, True), x)
  zeros = dropout.Dropout(1.0).apply({}, x, True, rngs={'dropout': KEY})
  np.testing.assert_array_equal(zeros, jnp.zeros_like(x))
