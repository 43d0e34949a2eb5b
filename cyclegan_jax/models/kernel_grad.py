"""The kernel gradient of a VALID stride-1 conv as matmuls over its taps (`convolution`'s
rule 2): XLA:CPU runs these near its matmul rate, where its own conv-shaped kernel gradient is
slow from about 48² output pixels up, and in any rolled loop's body.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

# Up to this many columns (taps × channels), the kernel gradient builds one patch matrix and
# does one matmul; beyond it, one matmul per tap is faster (fewer bytes copied).
MAX_PATCH_COLUMNS = 1024


def of_valid_conv(x: jax.Array, dy: jax.Array, kh: int, kw: int) -> jax.Array:
  """d(VALID stride-1 conv of x)/d(kernel) for the output gradient dy, [kh, kw, c, d].

  With x flattened to [n, rows·width, c], output position p of tap (i, j) reads x at
  p + i·width + j, so every tap is one contiguous slice. Output positions cover whole input
  rows: the kw − 1 spare columns of each row get zero in dy and add nothing.
  """
  n, out_h, out_w, d = dy.shape
  c, width = x.shape[3], x.shape[2]
  flat = jnp.pad(x.reshape(n, -1, c), ((0, 0), (0, kw - 1), (0, 0)))
  offsets = [i * width + j for i in range(kh) for j in range(kw)]
  length = out_h * width
  dy = jnp.pad(dy, ((0, 0), (0, 0), (0, width - out_w), (0, 0))).reshape(n, length, d)
  if len(offsets) * min(c, d) > MAX_PATCH_COLUMNS:  # One matmul per tap.
    grad = jnp.stack([_contract(flat[:, o:o + length], dy) for o in offsets])
    grad = grad.reshape(kh, kw, c, d)
  elif c <= d:  # Patches of x: [n, length, taps·c].
    grad = _contract(shifted(flat, kh, kw, width, length, -1), dy).reshape(kh, kw, c, d)
  else:  # dy shifted by every offset: [n, flat length, taps·d].
    grad = _contract(flat, shifted(dy, kh, kw, width, flat.shape[1], 1))
    grad = grad.reshape(c, kh, kw, d).transpose(1, 2, 0, 3)
  return grad.astype(x.dtype)


def shifted(a: jax.Array, kh: int, kw: int, width: int, length: int, sign: int) -> jax.Array:
  """[n, length, kh·kw·channels]: `a` ([n, l, channels]) moved along l by sign·(i·width + j)
  for every tap (i, j), zero where it has no value, the taps side by side in row-major order.
  Built in two rounds, the kw moves and then the kh moves of those, so kh + kw slices instead
  of kh·kw: XLA compiles each operand of a wide concatenation as a loop of its own."""

  def move(b: jax.Array, offsets: Sequence[int], out_length: int) -> jax.Array:
    shifts = [sign * o for o in offsets]
    before, after = max(max(shifts), 0), max(out_length - b.shape[1] - min(shifts), 0)
    b = jnp.pad(b, ((0, 0), (before, after), (0, 0)))
    return jnp.concatenate([lax.slice_in_dim(b, before - s, before - s + out_length, axis=1)
                            for s in shifts], axis=-1)

  rows = move(a, range(kw), length + (kh - 1) * width if sign < 0 else length)
  return move(rows, [i * width for i in range(kh)], length)


def _contract(a: jax.Array, b: jax.Array) -> jax.Array:
  """sum over n, l of a[n, l, c]·b[n, l, d] as one 2-D matmul: XLA:CPU runs a 2-axis einsum
  slower."""
  return lax.dot_general(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]),
                         (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
