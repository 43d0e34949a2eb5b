"""3×3 stride-1 convolutions by Winograd's minimal filtering, F(2×2, 3×3) (Lavin & Gray 2016).

A direct 3×3 conv spends 9 multiply-adds per output pixel and channel pair. Winograd cuts the
output into 2×2 tiles, maps each overlapping 4×4 input tile and each kernel into a transformed
domain with additions, multiplies there with one batched matmul of 16 slices, and maps the
products back: 4 multiply-adds per pixel and channel pair, 2.25× fewer. The transforms are
additions, slices and stacks, and so are their derivatives: autodiff turns the gradients of both
the input and the kernel into the same batched matmuls, so the backward pass gains as much.

The price is rounding: about 1e-6 of the output's scale in float32 (tests/test_winograd.py),
so it runs only in float32. 4×4 tiles (F(4×4, 3×3), 4× fewer) were faster still at 256², but
through a small generator's gradients their rounding reached 2e-3 of the largest gradient (2×2
tiles: 7e-5; the `patches` impl, which only sums in another order: 7e-5 too), so the module
keeps 2×2 tiles; another tile size is one more entry in _TRANSFORMS. `tile_for` decides where
they pay: CycleGAN's residual blocks (256 features) from 128² images up.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# y = Aᵀ[(G g) ⊙ (Bᵀ d)] for a tile d of m + 2 inputs and a 3-tap kernel g, by tile size m;
# F(2, 3) interpolates at 0, ±1 and ∞.
_TRANSFORMS = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)),
}
TILES = tuple(_TRANSFORMS)
# Where the 16 matmuls gain more than the transforms cost, from forward-and-backward times per
# conv shape (benchmarks.layers prints them): 2×2 tiles took 0.7–0.9× the direct conv's time for
# 256 → 256 features on 32² and 64² maps, about 1.0× on 16² maps, 1.0–1.4× for 128 → 128
# features and for CUT's 64 → 128 on 128² maps (64 → 64 on 64² maps: 0.7–0.8×, a shape no
# model has at its default width). Per image, not per batch: an image gets the same arithmetic
# on any number of devices.
MIN_TILES = 256
MIN_FEATURES = 256


def tile_for(x_shape: tuple[int, ...], w_shape: tuple[int, ...], dtype) -> int | None:
  """The tile size for a VALID 3×3 conv of an NHWC input of `x_shape` with an HWIO kernel of
  `w_shape`: the largest with MIN_TILES tiles per image, if both feature counts reach
  MIN_FEATURES and the dtype is float32; else None (the direct conv)."""
  if jnp.dtype(dtype) != jnp.float32 or min(w_shape[2:]) < MIN_FEATURES:
    return None
  _, h, w, _ = x_shape
  for m in sorted(TILES, reverse=True):
    if -(-(h - 2) // m) * -(-(w - 2) // m) >= MIN_TILES:
      return m
  return None


def _weighted_sums(matrix: np.ndarray, taps: list[jax.Array]) -> jax.Array:
  """[Σ_k matrix[a, k] · taps[k]] stacked over a: additions, the entries being mostly 0 or ±1."""
  sums = []
  for coefficients in matrix:
    terms = [tap if c == 1 else -tap if c == -1 else tap * c
             for c, tap in zip(coefficients, taps) if c]
    sums.append(sum(terms[1:], terms[0]))
  return jnp.stack(sums)


def _tile_transform(matrix: np.ndarray, x: jax.Array, axis: int, m: int, count: int) -> jax.Array:
  """Transforms `count` overlapping tiles along `axis` (tile t starts at m·t): the result's
  new leading axis is the transform's, `axis` keeps one entry per tile."""
  return _weighted_sums(matrix, [lax.slice_in_dim(x, k, k + m * (count - 1) + 1, m, axis)
                                 for k in range(matrix.shape[1])])


def _transform(matrix: np.ndarray, x: jax.Array, axis: int) -> jax.Array:
  """Transforms `axis` as a whole: it leaves, and the transform's axis leads. Its entries are
  taken by slicing, not by gathering (`jnp.take`): a slice's derivative is a pad, which XLA
  fuses with the sums, where a gather's is a scatter-add of its own, so the step compiles
  faster."""
  return _weighted_sums(matrix, [lax.index_in_dim(x, k, axis, keepdims=False)
                                 for k in range(matrix.shape[1])])


def conv3x3(x: jax.Array, w: jax.Array, m: int) -> jax.Array:
  """The VALID, stride-1 conv of NHWC `x` with the 3×3 HWIO kernel `w`, in m×m tiles."""
  b_t, g, a_t = _TRANSFORMS[m]
  n, h, width, c = x.shape
  out_h, out_w = h - 2, width - 2
  rows, cols = -(-out_h // m), -(-out_w // m)
  x = jnp.pad(x, ((0, 0), (0, m * rows + 2 - h), (0, m * cols + 2 - width), (0, 0)))
  t = m + 2
  # Each transform puts its axis first, so the second one's leads: v is [t (column), t (row), n,
  # rows, cols, c], and u [t, t, c, d] in the same order.
  v = _tile_transform(b_t, _tile_transform(b_t, x, 1, m, rows), 3, m, cols)
  u = _transform(g, _transform(g, w, 0), 1)
  products = lax.dot_general(v.reshape(t * t, -1, c), u.reshape(t * t, c, -1),
                             (((2,), (1,)), ((0,), (0,))))
  y = _transform(a_t, _transform(a_t, products.reshape(t, t, n, rows, cols, -1), 0), 1)
  # y: [row in tile, column in tile, n, rows, cols, d].
  y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, m * rows, m * cols, -1)
  return y[:, :out_h, :out_w]
