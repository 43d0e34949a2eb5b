"""Winograd convolutions (`conv_impl` winograd, the CPU default): XLA's conv, its input and kernel
gradients to the stated rounding, on which convs they run, and whole generators."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import default
from cyclegan_jax.models import convolution, generators, winograd

# Max-abs error over the max-abs of the exact result (measured on these small shapes: 2.3e-6 for
# 3×3 tiles, 1.4e-6 for 4×4).
REL_TOL = 5e-6


def _exact_conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                  precision=lax.Precision.HIGHEST)


def _output_and_grads(conv, x, w, dy):
  y, back = jax.vjp(conv, x, w)
  return (y, *back(dy))


def _inputs(shape, features, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, shape).astype(np.float32)
  w = (rng.normal(size=(3, 3, shape[-1], features)) / np.sqrt(9 * shape[-1])).astype(np.float32)
  dy = rng.normal(size=(shape[0], shape[1] - 2, shape[2] - 2, features)).astype(np.float32)
  return x, w, dy


@pytest.mark.parametrize('m', winograd.TILES)
@pytest.mark.parametrize('shape, features', [
    ((2, 18, 18, 16), 24),  # Whole tiles.
    ((3, 9, 13, 5), 7),  # Outputs of 7×11: the last tiles overhang and are cropped.
    ((1, 4, 3, 8), 4)])  # Smaller than one tile.
def test_each_tile_size_gives_xlas_conv_and_both_gradients(m, shape, features):
  x, w, dy = _inputs(shape, features)
  expected = jax.jit(functools.partial(_output_and_grads, _exact_conv))(x, w, dy)
  got = jax.jit(functools.partial(_output_and_grads, functools.partial(
      winograd.conv3x3, m=m)))(x, w, dy)
  for name, a, b in zip(('output', 'input grad', 'kernel grad'), got, expected):
    assert a.shape == b.shape and a.dtype == jnp.float32, name
    error = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
    assert error < REL_TOL, f'{name}: {error:.1e}'


@pytest.mark.parametrize('m, length', [(3, 11), (3, 13), (4, 14)])
def test_overlap_add_is_the_exact_adjoint_of_cutting_tiles(m, length):
  """The hand-written gradient adds each tile entry back at its pixel: on integers, exactly
  what autodiff's transpose of the strided slices gives, for whole tiles and an overhang."""
  count = (length - 2) // m
  x = jnp.arange(3 * length * 2, dtype=jnp.float32).reshape(3, length, 2)
  cut = lambda x: jnp.stack([lax.slice_in_dim(x, k, k + m * (count - 1) + 1, m, 1)
                             for k in range(m + 2)])
  parts = jnp.asarray(np.random.default_rng(0).integers(-9, 10, (m + 2, 3, count, 2)),
                      jnp.float32)
  expected, = jax.vjp(cut, x)[1](parts)
  got = winograd._overlap_add(parts, 1, m)
  covered = m * (count - 1) + m + 2  # Pixels past the last tile get no gradient.
  np.testing.assert_array_equal(got, expected[:, :covered])
  assert not expected[:, covered:].any()


@pytest.mark.parametrize('m', winograd.TILES)
def test_each_tile_transform_is_a_minimal_filter_of_m_outputs(m):
  """In float64, Aᵀ[(G g) ⊙ (Bᵀ d)] is the correlation of m + 2 inputs with 3 taps, m
  outputs, for any d and g: the float32 entries are the transforms, to their rounding."""
  b_t, g, a_t = (matrix.astype(np.float64) for matrix in winograd._TRANSFORMS[m])
  assert (b_t.shape, g.shape, a_t.shape) == ((m + 2, m + 2), (m + 2, 3), (m, m + 2))
  rng = np.random.default_rng(m)
  for _ in range(5):
    d, taps = rng.normal(size=m + 2), rng.normal(size=3)
    np.testing.assert_allclose(a_t @ ((g @ taps) * (b_t @ d)),
                               np.correlate(d, taps, 'valid'), rtol=0, atol=1e-6)


@pytest.mark.parametrize('m', winograd.TILES)
def test_kernel_transform_is_g_w_gt_per_channel_pair_and_its_adjoint(m):
  """On integers, exactly: u[a, b] = (G w Gᵀ)[b, a] per channel pair (the columns' axis
  first, as the tiles' transform orders v), and the transposed matrix's transform is its
  adjoint, <T w, u> = <w, Tᵀ u>, as the kernel gradient needs. G scaled to integers (its
  entries are multiples of 1/6 or 1/15) keeps the arithmetic exact."""
  g = winograd._TRANSFORMS[m][1] * {3: 6, 4: 15}[m]
  assert np.array_equal(g, np.round(g))
  rng = np.random.default_rng(0)
  w = rng.integers(-9, 10, (3, 3, 2, 5)).astype(np.float32)
  u = np.asarray(winograd._kernel_transform(g, jnp.asarray(w)))
  np.testing.assert_array_equal(u, np.einsum('bi,ijcd,aj->abcd', g, w, g))
  du = rng.integers(-9, 10, u.shape).astype(np.float32)
  back = np.asarray(winograd._kernel_transform(g.T, jnp.asarray(du)))
  assert back.shape == w.shape
  assert np.sum(u * du) == np.sum(w * back)


def test_tile_for_takes_the_largest_tiles_with_enough_pixels_times_features_per_image():
  assert winograd.TILES == (3, 4)
  assert winograd.MIN_PIXEL_FEATURES == {3: 32 * 32 * 256, 4: 64 * 64 * 256}
  f32, w = jnp.float32, (3, 3, 256, 256)
  assert winograd.tile_for((1, 130, 130, 256), w, f32) == 4  # 512² images' blocks: 128² outputs.
  assert winograd.tile_for((1, 66, 66, 256), w, f32) == 4  # 256²: 64² outputs.
  assert winograd.tile_for((1, 65, 66, 256), w, f32) == 3  # 63 × 64 outputs.
  assert winograd.tile_for((1, 34, 34, 256), w, f32) == 3  # 128²: 32² outputs.
  assert winograd.tile_for((1, 33, 34, 256), w, f32) is None  # 31 × 32 outputs.
  assert winograd.tile_for((1, 18, 18, 256), w, f32) is None  # 64²: 16² outputs.
  assert winograd.tile_for((64, 18, 18, 256), w, f32) is None  # Per image, whatever the batch.
  # CUT's antialiased convs at 128²: 64 features in on 128² maps, 128 on 64² maps.
  assert winograd.tile_for((1, 130, 130, 64), (3, 3, 64, 128), f32) == 4
  assert winograd.tile_for((1, 66, 66, 128), (3, 3, 128, 256), f32) == 3
  assert winograd.tile_for((1, 66, 66, 256), (3, 3, 256, 128), f32) == 3
  # The demo's (64², 32 to 128 features) and the digit configs' blocks (16² outputs, 64).
  assert winograd.tile_for((1, 66, 66, 32), (3, 3, 32, 64), f32) is None
  assert winograd.tile_for((1, 34, 34, 64), (3, 3, 64, 128), f32) is None
  assert winograd.tile_for((8, 18, 18, 64), (3, 3, 64, 64), f32) is None
  assert winograd.tile_for((1, 66, 66, 256), w, jnp.bfloat16) is None


def test_each_image_gets_the_same_arithmetic_in_any_batch():
  """So a step over 1 or 8 devices computes every image alike (the 1-vs-N device tests)."""
  x, w, _ = _inputs((4, 34, 34, 16), 8)
  for m in winograd.TILES:
    conv = jax.jit(functools.partial(winograd.conv3x3, m=m))
    together = conv(x, w)
    for i in range(4):
      np.testing.assert_array_equal(conv(x[i:i + 1], w), together[i:i + 1])


@pytest.fixture
def tiles_run(monkeypatch):
  """The tile size of every `winograd.conv3x3` traced during the test, in order."""
  tiles, original = [], winograd.conv3x3
  monkeypatch.setattr(winograd, 'conv3x3', lambda x, w, m: tiles.append(m) or original(x, w, m))
  return tiles


def test_the_impl_runs_winograd_only_on_large_float32_3x3_stride_1_convs(tiles_run):
  def convs_and_tiles(x, w, stride, padding):
    """(conv ops in the traced `winograd` impl, tile sizes it ran)."""
    tiles_run.clear()
    jaxpr = jax.make_jaxpr(lambda x, w: convolution.conv_general_dilated(
        x, w, stride, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'), impl='winograd'))(x, w)
    return str(jaxpr).count('conv_general_dilated'), list(tiles_run)

  big, small = jnp.zeros((1, 66, 66, 256)), jnp.zeros((8, 18, 18, 256))
  w3, w4 = jnp.zeros((3, 3, 256, 256)), jnp.zeros((4, 4, 256, 256))
  same = ((1, 1), (1, 1))
  assert convs_and_tiles(big, w3, (1, 1), same) == (0, [4])
  assert convs_and_tiles(big, w3, (1, 1), ((0, 0), (0, 0))) == (0, [4])
  assert convs_and_tiles(big[:, :62, :62], w3, (1, 1), ((0, 0), (0, 0))) == (0, [3])
  assert convs_and_tiles(small, w3, (1, 1), same) == (1, [])
  assert convs_and_tiles(big, w3, (2, 2), same) == (1, [])
  assert convs_and_tiles(big, w4, (1, 1), same) == (1, [])
  assert convs_and_tiles(big, w3[:, :, :, :128], (1, 1), same) == (0, [3])
  assert convs_and_tiles(big, w3[:, :, :, :32], (1, 1), same) == (1, [])
  assert convs_and_tiles(big.astype(jnp.bfloat16), w3.astype(jnp.bfloat16), (1, 1),
                         same) == (1, [])


def test_zero_padding_is_applied_before_the_tiles():
  x, w, _ = _inputs((2, 12, 12, 4), 3)
  expected = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      precision=lax.Precision.HIGHEST)
  got = winograd.conv3x3(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), w, 3)
  np.testing.assert_allclose(got, expected, rtol=0, atol=REL_TOL * float(np.abs(expected).max()))


@pytest.mark.slow
def test_a_resnet_generator_and_its_gradients_match_xla(tiles_run, monkeypatch):
  """resnet_6blocks at 128²: its blocks run on 32² maps of 256 features in 3×3 Winograd tiles,
  and in 4×4 ones when a lower threshold lets them; the output, and the parameter gradients as
  one vector, against XLA's convs (computed once for both)."""
  config = default.get_config().model
  config.update(generator='resnet_6blocks', unroll_blocks=True)
  g = generators.create_generator(config)
  x = jax.random.uniform(jax.random.key(1), (1, 128, 128, 3), minval=-1)
  variables = jax.jit(g.init)(jax.random.key(2), x)

  def loss(params):
    y = g.apply({**variables, 'params': params}, x)
    return jnp.mean(y * jnp.linspace(-1, 1, y.size).reshape(y.shape)), y

  def output_and_grads(impl):
    with convolution.using(impl):
      (_, y), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])
    return y, np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(grads)])

  y_xla, grads_xla = output_and_grads('xla')
  for m, min_pixel_features, output_tolerance, grads_tolerance in (
      (3, winograd.MIN_PIXEL_FEATURES, 5e-5, 3e-3),  # Measured here: 1.8e-5 and 4.4e-4.
      (4, {4: 32 * 32 * 256}, 5e-5, 1e-2)):  # Measured here: 1.9e-5 and 2.4e-3.
    monkeypatch.setattr(winograd, 'MIN_PIXEL_FEATURES', min_pixel_features)
    tiles_run.clear()
    y, grads = output_and_grads('winograd')
    assert set(tiles_run) == {m}
    np.testing.assert_allclose(y, y_xla, rtol=0, atol=output_tolerance, err_msg=f'{m}×{m}')
    error = np.linalg.norm(grads - grads_xla) / np.linalg.norm(grads_xla)
    assert error < grads_tolerance, (m, error)
