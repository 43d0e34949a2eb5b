"""Instance norm without affine parameters, with a hand-written gradient.

y = (x − mean) / sqrt(var + ε) over each sample's and channel's pixels (axes 1, 2 of NHWC), the
variance in two passes as torch computes it. Differentiated automatically, that chain keeps two
full-size tensors per norm for the backward pass (x − mean, and y for the activation after it)
and makes several passes over them. The gradient written out,

  dx = (dy − mean(dy) − y · mean(dy · y)) / sqrt(var + ε),

needs only y, which the activation after the norm keeps anyway, and the per-channel 1/sqrt(var
+ ε): one full-size tensor fewer per norm, and one fused reduction pass plus one elementwise pass.
Both are named `SAVED` for `jax.checkpoint` policies (generators.py keeps them, and recomputes
the cheap activations and pads between them, in the residual blocks).
"""

import functools

import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

_AXES = (1, 2)
SAVED = 'instance_norm'  # checkpoint_name of what the backward pass keeps.


def _normalise(x: jax.Array, epsilon: float) -> tuple[jax.Array, jax.Array]:
  """y and 1/sqrt(var + ε), computed in float32 at least."""
  x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  centred = x32 - jnp.mean(x32, _AXES, keepdims=True)
  inv_std = jax.lax.rsqrt(jnp.mean(jnp.square(centred), _AXES, keepdims=True) + epsilon)
  return (centred * inv_std).astype(x.dtype), inv_std


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def instance_norm(x: jax.Array, epsilon: float = 1e-5) -> jax.Array:
  """Normalises each sample's channels over its pixels; x is NHWC."""
  return _normalise(x, epsilon)[0]


def _forward(x, epsilon):
  y, inv_std = _normalise(x, epsilon)
  y, inv_std = checkpoint_name(y, SAVED), checkpoint_name(inv_std, SAVED)
  return y, (y, inv_std)


def _backward(epsilon, residuals, dy):
  del epsilon  # Only through inv_std.
  y, inv_std = residuals
  y32, dy32 = y.astype(inv_std.dtype), dy.astype(inv_std.dtype)
  dx = inv_std * (dy32 - jnp.mean(dy32, _AXES, keepdims=True)
                  - y32 * jnp.mean(dy32 * y32, _AXES, keepdims=True))
  return (dx.astype(dy.dtype),)


instance_norm.defvjp(_forward, _backward)
