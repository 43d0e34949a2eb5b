"""3×3 stride-1 convolutions by Winograd's minimal filtering, F(m×m, 3×3) (Lavin & Gray 2016).

A direct 3×3 conv spends 9 multiply-adds per output pixel and channel pair. Winograd cuts the
output into m×m tiles, maps each overlapping (m + 2)² input tile and each kernel into a
transformed domain with additions, multiplies there with one batched matmul of (m + 2)²
slices, and maps the products back: 25 / 9 = 2.78 multiply-adds per pixel and channel pair for
3×3 tiles (3.24× fewer), 2.25 for 4×4 tiles (4× fewer). The tiles' transforms are additions,
slices and stacks, the kernel's one small matmul, and so are their adjoints, so the gradients of
both the input and the kernel are the same batched matmuls and the backward pass gains as much.
The adjoints are written out (a custom VJP), each a pass over its operand as the forward
transforms are.

The price is rounding, larger for larger tiles, so it runs only in float32: on one 256 → 256
conv, 4e-6 of the output's scale for 3×3 and for 4×4 tiles (XLA's conv: 6e-7); through a
resnet_9blocks generator at 256², its parameter gradients are 4e-3 from float64 with 4×4 tiles,
where XLA's own float32 convs are 1.5e-3 (docs/speed_experiments.md). `tile_for` decides where
they pay.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# y = Aᵀ[(G g) ⊙ (Bᵀ d)] for a tile d of m + 2 inputs and a 3-tap kernel g, by tile size m
# (Toom-Cook: Bᵀ evaluates the tile's polynomial at m + 1 points and ∞, G the kernel's, divided
# by each point's product of differences, and Aᵀ interpolates). F(3, 3) interpolates at 0, ±1, 2
# and ∞ (of the sets 0, ±1 and one of ±1/2, ±2, the one that rounded least on a 256 → 256 conv);
# F(4, 3) at 0, ±1, 1/2, −2 and ∞, which rounded 2.7× less than the usual 0, ±1, ±2.
_TRANSFORMS = {
    3: (np.array([[2, -1, -2, 1, 0], [0, 2, 1, -1, 0], [0, 2, -3, 1, 0], [0, -1, 0, 1, 0],
                  [0, 2, -1, -2, 1]], np.float32),
        np.array([[1/2, 0, 0], [1/2, 1/2, 1/2], [-1/6, 1/6, -1/6], [1/6, 1/3, 2/3], [0, 0, 1]],
                 np.float32),
        np.array([[1, 1, 1, 1, 0], [0, 1, -1, 2, 0], [0, 1, 1, 4, 1]], np.float32)),
    4: (np.array([[1, -3/2, -2, 3/2, 1, 0], [0, -1, 1/2, 5/2, 1, 0], [0, 1, -5/2, 1/2, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 1/2, -1, -1/2, 1, 0], [0, 1, -3/2, -2, 3/2, 1]],
                 np.float32),
        np.array([[1, 0, 0], [1/3, 1/3, 1/3], [-1/3, 1/3, -1/3], [-16/15, -8/15, -4/15],
                  [1/15, -2/15, 4/15], [0, 0, 1]], np.float32),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 1/2, -2, 0], [0, 1, 1, 1/4, 4, 0],
                  [0, 1, -1, 1/8, -8, 1]], np.float32)),
}
TILES = tuple(_TRANSFORMS)
# Where the matmuls gain more than the transforms cost, as whole steps measured it
# (docs/speed_experiments.md): by output pixels per image times the smaller feature count,
# taking the largest tile whose threshold is reached. CycleGAN's residual blocks run in 3×3 tiles
# at 128² and in 4×4 from 256²; the default model at 64² and the demo stepped no faster in tiles
# and compiled slower, so they keep the direct conv, as do the digit configs. Per image, not per
# batch: an image gets the same arithmetic on any number of devices.
MIN_PIXEL_FEATURES = {4: 64 * 64 * 256, 3: 32 * 32 * 256}


def tile_for(x_shape: tuple[int, ...], w_shape: tuple[int, ...], dtype) -> int | None:
  """The tile size for a VALID 3×3 conv of an NHWC input of `x_shape` with an HWIO kernel of
  `w_shape`: the largest whose threshold in MIN_PIXEL_FEATURES the output pixels per image,
  times the smaller feature count, reach, if the dtype is float32; else None (the direct conv)."""
  if jnp.dtype(dtype) != jnp.float32:
    return None
  _, h, w, _ = x_shape
  pixel_features = (h - 2) * (w - 2) * min(w_shape[2:])
  for m, threshold in sorted(MIN_PIXEL_FEATURES.items(), reverse=True):
    if pixel_features >= threshold:
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
  """Transforms `axis` as a whole: it leaves, and the transform's axis leads."""
  return _weighted_sums(matrix, [lax.index_in_dim(x, k, axis, keepdims=False)
                                 for k in range(matrix.shape[1])])


def _kernel_transform(matrix: np.ndarray, w: jax.Array) -> jax.Array:
  """matrix · w · matrixᵀ for every channel pair, [k, k, c, d] → [a, a, c, d] (the columns'
  axis first, as two `_transform`s order it), as one matmul by the matrix's Kronecker square:
  one pass over the kernel where two `_transform`s take two. Inside a rolled loop of blocks the
  kernels are transformed again at every call, and at 128² a kernel is as large as a block's
  feature map. In float32 whatever the default matmul precision: the transform is exact
  arithmetic, not the model's."""
  a, k = matrix.shape
  kron = np.einsum('bi,aj->abij', matrix, matrix).reshape(a * a, k * k)
  return jnp.dot(kron, w.reshape(k * k, -1),
                 precision=lax.Precision.HIGHEST).reshape(a, a, *w.shape[2:])


def _overlap_add(parts: jax.Array, axis: int, m: int) -> jax.Array:
  """The adjoint of `_tile_transform`'s tiling: parts[k] holds entry k of every tile along
  `axis`, which lands at m·t + k for tile t, so the last entries of one tile and the first of
  the next add up. Returns `axis` at its full length, m·(tiles - 1) + len(parts)."""
  size, count = parts.shape[0], parts.shape[1 + axis]
  pad = lambda y, ends: lax.pad(y, 0.0, [(0, 0, 0)] * axis + [(*ends, 0)]
                                + [(0, 0, 0)] * (y.ndim - 1 - axis))
  # Pixel m·t + j holds entry j of tile t and, for j < size - m, entry j + m of tile t - 1.
  phases = [sum(pad(parts[k], ends) for k, ends in ((j, (0, 1)), (j + m, (1, 0))) if k < size)
            for j in range(m)]
  y = jnp.stack(phases, axis + 1)
  y = y.reshape(*y.shape[:axis], m * (count + 1), *y.shape[axis + 2:])
  return lax.slice_in_dim(y, 0, m * (count - 1) + size, axis=axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _tiled_conv(x: jax.Array, w: jax.Array, m: int) -> jax.Array:
  """conv3x3 of an x of m·rows + 2 × m·cols + 2 pixels: [n, m·rows, m·cols, d]."""
  return _tiled_conv_forward(x, w, m)[0]


def _tiled_conv_forward(x, w, m):
  b_t, g, a_t = _TRANSFORMS[m]
  n, h, width, c = x.shape
  rows, cols, t = (h - 2) // m, (width - 2) // m, m + 2
  # Each transform puts its axis first, so the second one's leads: v is [t (column), t (row), n,
  # rows, cols, c], and u [t, t, c, d] in the same order.
  v = _tile_transform(b_t, _tile_transform(b_t, x, 1, m, rows), 3, m, cols)
  u = _kernel_transform(g, w)
  v, u = v.reshape(t * t, -1, c), u.reshape(t * t, c, -1)
  products = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))))
  y = _transform(a_t, _transform(a_t, products.reshape(t, t, n, rows, cols, -1), 0), 1)
  # y: [row in tile, column in tile, n, rows, cols, d].
  y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, m * rows, m * cols, -1)
  return y, (v, u)


def _tiled_conv_backward(m, residuals, dy):
  """Each transform's adjoint written out: the transposed matrix's weighted sums, and for the
  input, the tiles' overlaps added. Left to autodiff, every slice of the transforms turned into
  a full-size pad of its own that a sum then read back."""
  b_t, g, a_t = _TRANSFORMS[m]
  v, u = residuals
  n, rows, cols, c, t = dy.shape[0], dy.shape[1] // m, dy.shape[2] // m, v.shape[2], m + 2
  dy = dy.reshape(n, rows, m, cols, m, -1)
  # Rows in tile (axis 2), then columns (now axis 4): [t (column), t (row), n, rows, cols, d].
  d_products = _transform(a_t.T, _transform(a_t.T, dy, 2), 4).reshape(t * t, -1, dy.shape[-1])
  dv = lax.dot_general(d_products, u, (((2,), (2,)), ((0,), (0,))))
  du = lax.dot_general(v, d_products, (((1,), (1,)), ((0,), (0,))))
  # The columns' transform and tiles undone, then the rows': x's shape.
  dx = _overlap_add(_transform(b_t.T, dv.reshape(t, t, n, rows, cols, c), 0), 3, m)
  dx = _overlap_add(_transform(b_t.T, dx, 0), 1, m)
  # The kw sums lead until the kh sums put theirs first: [kh, kw, c, d].
  dw = _kernel_transform(g.T, du.reshape(t, t, c, -1))
  return dx, dw


_tiled_conv.defvjp(_tiled_conv_forward, _tiled_conv_backward)


def conv3x3(x: jax.Array, w: jax.Array, m: int) -> jax.Array:
  """The VALID, stride-1 conv of NHWC `x` with the 3×3 HWIO kernel `w`, in m×m tiles."""
  _, h, width, _ = x.shape
  out_h, out_w = h - 2, width - 2
  rows, cols = -(-out_h // m), -(-out_w // m)
  x = jnp.pad(x, ((0, 0), (0, m * rows + 2 - h), (0, m * cols + 2 - width), (0, 0)))
  return _tiled_conv(x, w, m)[:, :out_h, :out_w]
