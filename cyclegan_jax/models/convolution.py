"""2-D convolutions in the forms XLA's CPU backend runs fastest, with the same results.

Every conv the models use goes through `conv_general_dilated`, computed by the impl this process
chose (`set_impl`, the `--conv_impl` flag; 'auto' picks by backend) or a `using` block:
- `xla`: `lax.conv_general_dilated` and its automatic derivative, the right choice on GPU/TPU.
- `cpu`: the same function, arranged for XLA's CPU backend (per-layer timings:
  `python -m cyclegan_jax.benchmarks.layers`; figures in docs/speed_experiments.md):
  1. An unpadded (VALID) stride-1 conv, which is what a reflect-padded conv is, runs several
     times slower than one with a zero padding of 1 to (k − 1)/2, so VALID convs run with one
     extra zero row and column, cropped away, and wide paddings are applied beforehand.
  2. From about 48² output pixels (or 32² of 512 features), the kernel gradient (a conv of x
     with dy in XLA) is computed as matmuls over the kernel taps (kernel_grad.py), which run
     near the matmul rate; below, XLA's is as fast, except in the body of a rolled loop
     (`loop_body`), where XLA runs its own conv gradients as naive loops: there the matmuls
     are used at every size.
  3. Strided convs take their gradients as stride-1 convs of a space-to-depth input, so the
     two rules above cover them too.
  Results match `xla` to float32 rounding (tests/test_convolution.py); parameters are the same.
- `winograd` (the CPU default): `cpu`, except that 3×3 stride-1 float32 convs large enough to
  pay (`winograd.tile_for`: ResNet blocks from 128² images up, CUT's antialiased convs) run as
  Winograd's F(3×3, 3×3) or, from 256² images, F(4×4, 3×3), with 3.24× or 4× fewer
  multiplications (winograd.py). Its rounding differs from a direct conv's by about 4e-6 of the
  output's scale; `cpu` keeps the direct form's results bit for bit.
- `patches`: im2col, the kernel taps' strided slices of the padded input concatenated and
  multiplied by the kernel as one matmul. Slower for a plain step, but every derivative of every
  order is again slices, pads and matmuls. Differentiating a strided conv twice (the R1
  penalty) gives XLA's CPU backend dilated convs that it runs as naive loops (README, DCGAN):
  `for_second_derivatives` picks `patches` on CPU.

All take NHWC inputs and HWIO kernels; conv_transpose.py builds transposed convs on them.
"""

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from cyclegan_jax.models import kernel_grad, winograd

IMPLS = ('auto', 'xla', 'cpu', 'winograd', 'patches')
IMPL_HELP = 'How convs are computed (auto: winograd on the CPU backend, xla on GPU and TPU).'
_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')
_MIN_MATMUL_GRAD_PIXELS = 2048
_MIN_MATMUL_GRAD_VALUES = 32 * 32 * 512  # Output values per image.

Padding = Sequence[tuple[int, int]]

_process_impl = 'auto'  # set_impl; read at trace time through current_impl.
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar('conv_impl', default=None)
_in_loop_body: contextvars.ContextVar[bool] = contextvars.ContextVar('in_loop', default=False)


def _known(impl: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f'unknown conv_impl {impl!r}; expected one of {", ".join(IMPLS)}')
  return impl


def resolve_impl(impl: str) -> str:
  """'auto' → 'winograd' on the CPU backend, 'xla' on GPU and TPU."""
  if _known(impl) == 'auto':
    return 'winograd' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def set_impl(impl: str) -> None:
  """Sets this process's conv impl (`--conv_impl`): how this machine computes convs is not part
  of a model, so it lives in no config, layer or checkpoint. 'auto' resolves at the first
  trace: the backend may not exist yet (jax.distributed starts first)."""
  global _process_impl
  _process_impl = _known(impl)


def current_impl() -> str:
  """The resolved impl convs traced now use: the innermost `using`, else the process's."""
  return resolve_impl(_override.get() or _process_impl)


@contextlib.contextmanager
def using(impl: str) -> Iterator[None]:
  """Traces the convs inside the block with `impl`. It is read at trace time, so a function
  jitted once keeps the impl it was first traced with."""
  token = _override.set(resolve_impl(impl))
  try:
    yield
  finally:
    _override.reset(token)


@contextlib.contextmanager
def loop_body(rolled: bool = True) -> Iterator[None]:
  """Traces the convs inside the block as the body of a rolled loop (a scan) for rule 2, if
  `rolled`: an unrolled scan is straight-line code again."""
  token = _in_loop_body.set(_in_loop_body.get() or rolled)
  try:
    yield
  finally:
    _in_loop_body.reset(token)


def for_second_derivatives() -> str:
  """The impl to differentiate twice through: `patches` on the CPU backend, whichever impl the
  model runs with, else the current one."""
  return 'patches' if jax.default_backend() == 'cpu' else current_impl()


def patches_conv(x: jax.Array, w: jax.Array, stride: tuple[int, int],
                 padding: Padding) -> jax.Array:
  """The `patches` impl: [n, out_h, out_w, kh·kw·c] patches (tap-major, as w's HWIO layout
  flattens) times w as [kh·kw·c, d]."""
  (kh, kw, c, d), (sh, sw) = w.shape, stride
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  taps = [x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
          for i in range(kh) for j in range(kw)]
  return lax.dot_general(jnp.concatenate(taps, axis=-1), w.reshape(kh * kw * c, d),
                         (((3,), (0,)), ((), ())))


def _xla_conv(x: jax.Array, w: jax.Array, stride: tuple[int, int] = (1, 1)) -> jax.Array:
  """VALID conv, run with one stride of zero padding after the last row and column (rule 1),
  then cropped to the VALID output."""
  (kh, kw), (sh, sw) = w.shape[:2], stride
  out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  # The barrier keeps XLA from folding an explicit zero padding of x into the conv's own, which
  # would make it large enough to be slow again (7×7, 64→3 at 256²: 33 ms vs 8 ms).
  x = lax.optimization_barrier(x)
  y = lax.conv_general_dilated(x, w, stride, ((0, sh), (0, sw)), dimension_numbers=_DIMENSIONS)
  return y[:, :out_h, :out_w]


def _input_grad(w: jax.Array, dy: jax.Array) -> jax.Array:
  """d(VALID stride-1 conv)/dx: the full correlation of dy with the flipped, transposed kernel,
  padded beforehand (XLA's CPU conv is slow again for pads over (k − 1)/2)."""
  kh, kw = w.shape[:2]
  dy = jnp.pad(dy, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
  return _xla_conv(dy, jnp.flip(w, (0, 1)).swapaxes(2, 3))


def _space_to_depth(x: jax.Array, w: jax.Array, stride: tuple[int, int]):
  """A stride-s VALID conv as the stride-1 VALID conv of the same output on s×s blocks (rule 3).

  Kernel taps are grouped by their phase (i mod s, j mod s); a kernel side that is not a
  multiple of s is padded with zero taps. The input is cropped or zero-padded to exactly what
  the output reads, so the result has the original output size.
  """
  (sh, sw), (kh, kw) = stride, w.shape[:2]
  bh, bw = -(-kh // sh), -(-kw // sw)  # Kernel size in blocks.
  out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  rows, cols = sh * (out_h - 1 + bh), sw * (out_w - 1 + bw)
  x = jnp.pad(x[:, :rows, :cols], ((0, 0), (0, max(rows - x.shape[1], 0)),
                                   (0, max(cols - x.shape[2], 0)), (0, 0)))
  n, _, _, c = x.shape
  x = x.reshape(n, rows // sh, sh, cols // sw, sw, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(n, rows // sh, cols // sw, sh * sw * c)
  w = jnp.pad(w, ((0, bh * sh - kh), (0, bw * sw - kw), (0, 0), (0, 0)))
  w = w.reshape(bh, sh, bw, sw, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(bh, bw, sh * sw * c, -1)
  return x, w


def _forward(x: jax.Array, w: jax.Array, stride: tuple[int, int], padding: Padding) -> jax.Array:
  """Rule 1. The models' zero paddings are all within (k − 1)/2, so they are passed on."""
  if any(lo or hi for lo, hi in padding):
    return lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=_DIMENSIONS)
  return _xla_conv(x, w, stride)


def _matmul_grads_pay(dy_shape: tuple[int, ...], in_loop_body: bool) -> bool:
  """Rule 2 wins from about 48² output pixels up, from 32² pixels of 512 features (the 128²
  generator's first transposed conv), and in a loop body; below, XLA's own gradients are as
  fast or faster, except for single-channel outputs (PatchGAN's last conv)."""
  _, out_h, out_w, features = dy_shape
  return (in_loop_body or out_h * out_w >= _MIN_MATMUL_GRAD_PIXELS
          or out_h * out_w * features >= _MIN_MATMUL_GRAD_VALUES or features == 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x: jax.Array, w: jax.Array, stride: tuple[int, int], padding: Padding,
          in_loop_body: bool) -> jax.Array:
  """`in_loop_body` is read when the forward pass is traced: the backward pass is traced
  later, outside any `loop_body` block."""
  return _forward(x, w, stride, padding)


def _conv_fwd(x, w, stride, padding, in_loop_body):
  return _forward(x, w, stride, padding), (x, w)


def _conv_bwd(stride, padding, in_loop_body, residuals, dy):
  """Both gradients through the stride-1 VALID form of the padded input (rules 1–3)."""
  x, w = residuals
  dy = dy.astype(x.dtype)
  if not _matmul_grads_pay(dy.shape, in_loop_body):
    _, xla_vjp = jax.vjp(lambda x, w: lax.conv_general_dilated(
        x, w, stride, padding, dimension_numbers=_DIMENSIONS), x, w)
    return xla_vjp(dy)
  padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  if stride == (1, 1):
    dx, dw = _input_grad(w, dy), kernel_grad.of_valid_conv(padded, dy, *w.shape[:2])
  else:
    (xs, ws), back = jax.vjp(lambda x, w: _space_to_depth(x, w, stride), padded, w)
    dx, dw = back((_input_grad(ws, dy), kernel_grad.of_valid_conv(xs, dy, *ws.shape[:2])))
  (top, _), (left, _) = padding
  return dx[:, top:top + x.shape[1], left:left + x.shape[2]], dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def cpu_conv(x: jax.Array, w: jax.Array, stride: tuple[int, int], padding: Padding) -> jax.Array:
  """The `cpu` impl of a conv with zero padding (see the module docstring)."""
  stride, padding = tuple(stride), tuple(tuple(pair) for pair in padding)
  if w.shape[:2] == (1, 1) and stride == (1, 1) and not any(sum(padding, ())):
    return jnp.einsum('nhwc,cd->nhwd', x, w[0, 0])  # A matmul; its derivative is too.
  return _conv(x, w, stride, padding, _in_loop_body.get())


def winograd_conv(x: jax.Array, w: jax.Array, stride: tuple[int, int],
                  padding: Padding) -> jax.Array:
  """The `winograd` impl: a 3×3 stride-1 float32 conv in Winograd tiles where `winograd.tile_for`
  finds enough of them; any other conv as `cpu_conv`."""
  if w.shape[:2] == (3, 3) and tuple(stride) == (1, 1):
    (top, bottom), (left, right) = padding
    n, h, width, c = x.shape
    tile = winograd.tile_for((n, h + top + bottom, width + left + right, c), w.shape,
                             jnp.result_type(x, w))
    if tile:
      return winograd.conv3x3(jnp.pad(x, ((0, 0), *padding, (0, 0))), w, tile)
  return cpu_conv(x, w, stride, padding)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         preferred_element_type=None, *, impl: str | None = None):
  """`lax.conv_general_dilated`'s signature (so flax's `nn.Conv` can take it) for `impl`
  (default: `current_impl()`).

  The `cpu` and `patches` impls cover what the models use: NHWC, no dilation, one feature
  group, default precision; anything else raises.
  """
  impl = current_impl() if impl is None else resolve_impl(impl)
  if impl == 'xla':
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision,
                                    preferred_element_type=preferred_element_type)
  unsupported = [name for name, used in (
      ('dilation', any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))),
      ('feature groups', feature_group_count != 1), ('precision', precision is not None),
      ('preferred_element_type', preferred_element_type is not None),
      ('layout', lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
       != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMENSIONS))) if used]
  if unsupported:
    raise ValueError(f'conv_impl "{impl}" does not support {", ".join(unsupported)}; '
                     'use conv_impl "xla"')
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  if impl == 'patches':
    return patches_conv(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)))
  if impl == 'winograd':
    return winograd_conv(lhs, rhs, window_strides, padding)
  return cpu_conv(lhs, rhs, window_strides, padding)
