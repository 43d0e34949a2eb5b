"""The instance norm's hand-written gradient, and what the residual blocks keep for the backward
pass."""

import contextlib
import io
import re

import flax.linen as nn
import jax
from jax.ad_checkpoint import print_saved_residuals
import jax.numpy as jnp
import numpy as np
import pytest

from cyclegan_jax.models import generators, instance_norm

EPS = 1e-5


def autodiff_norm(x):
  """The chain the hand-written gradient replaces, differentiated by JAX."""
  return nn.InstanceNorm(epsilon=EPS, use_bias=False, use_scale=False,
                         use_fast_variance=False).apply({}, x)


def test_forward_and_gradient_on_a_hand_made_map():
  x = jnp.array([1.0, 3.0, 5.0, 7.0]).reshape(1, 2, 2, 1)  # Mean 4, variance 5.
  dy = jnp.array([1.0, 0.0, 0.0, 0.0]).reshape(1, 2, 2, 1)
  y, vjp = jax.vjp(lambda x: instance_norm.instance_norm(x, EPS), x)
  inv_std = 1 / np.sqrt(5 + EPS)
  expected_y = np.array([-3.0, -1.0, 1.0, 3.0]) * inv_std
  np.testing.assert_allclose(y.ravel(), expected_y, rtol=1e-6)
  # dx = inv_std · (dy − mean(dy) − y · mean(dy · y)), by hand in float64.
  expected_dx = inv_std * (np.array([1.0, 0, 0, 0]) - 0.25 - expected_y * expected_y[0] / 4)
  np.testing.assert_allclose(vjp(dy)[0].ravel(), expected_dx, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('scale, shift', [(3.0, 2.0), (0.05, 0.5)])
def test_matches_the_autodiff_chain(scale, shift):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(shift, scale, (2, 6, 5, 4)), jnp.float32)
  dy = jnp.asarray(rng.normal(0, 1, x.shape), jnp.float32)
  ours, our_vjp = jax.vjp(lambda x: instance_norm.instance_norm(x, EPS), x)
  theirs, their_vjp = jax.vjp(autodiff_norm, x)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(our_vjp(dy)[0], their_vjp(dy)[0], rtol=1e-4, atol=2e-5 / scale)


def test_bfloat16_in_bfloat16_out_with_float32_statistics():
  x = jnp.linspace(-3, 5, 2 * 4 * 4 * 3).reshape(2, 4, 4, 3).astype(jnp.bfloat16)
  y, vjp = jax.vjp(lambda x: instance_norm.instance_norm(x, EPS), x)
  assert y.dtype == jnp.bfloat16 and vjp(jnp.ones_like(y))[0].dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(jnp.float32), autodiff_norm(x.astype(jnp.float32)),
                             atol=0.02)


def _residual_shapes(generator, size=16):
  x = jnp.ones((1, size, size, 3))
  variables = jax.jit(generator.init)(jax.random.key(0, impl='rbg'), x)
  printed = io.StringIO()  # Lines such as 'f32[3,1,4,4,16] output of scan from ...'.
  with contextlib.redirect_stdout(printed):
    print_saved_residuals(lambda v: jnp.mean(generator.apply(v, x)), variables)
  return [tuple(int(d) for d in dims.split(',') if d)
          for dims in re.findall(r'^\w+\[([\d,]*)\]', printed.getvalue(), re.MULTILINE)]


@pytest.mark.parametrize('unroll', [False, True])
def test_rolled_blocks_keep_norm_outputs_not_padded_maps(unroll):
  """Rolled, the backward pass of a residual block keeps its input and its norms' outputs and
  recomputes the reflect pads; unrolled, XLA would undo that, so the pads are kept."""
  blocks, ngf = 3, 4
  shapes = _residual_shapes(generators.ResnetGenerator(ngf=ngf, n_blocks=blocks, unroll=unroll))
  padded_map = (blocks, 1, 6, 6, 4 * ngf)  # 16² / 4 = 4² block maps, reflect-padded by 1.
  block_map = (blocks, 1, 4, 4, 4 * ngf)
  assert (padded_map in shapes) == unroll
  if not unroll:
    assert shapes.count(block_map) == 3  # Each block's input and its two norms' outputs.
