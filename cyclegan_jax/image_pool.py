"""A functional history of generated images (Shrivastava et al. 2017), as in the reference.

The discriminator sees a mix of current and past fakes, which damps oscillation. The pool is a
pytree (`PoolState`) threaded through the train step, so it works under jit and pmap. Under
pmap, `query_global` makes it the reference's single pool at the global batch: every device
holds the same pool of every device's fakes, so a run does not depend on the device count.
"""

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class PoolState:
  images: jax.Array  # [pool_size, H, W, C]; only the first `count` entries are filled.
  count: jax.Array  # int32 scalar.


def init(pool_size: int, image_shape: tuple[int, ...], dtype=jnp.float32) -> PoolState:
  return PoolState(images=jnp.zeros((pool_size,) + tuple(image_shape), dtype),
                   count=jnp.zeros((), jnp.int32))


def query(state: PoolState, images: jax.Array, key: jax.Array) -> tuple[PoolState, jax.Array]:
  """Returns (new state, images for the discriminator), image by image as the reference does.

  While the pool fills, each image is stored and returned. Once full, with probability ½ a
  random stored image is returned and the new one takes its place; otherwise the new image is
  returned. A pool of size 0 passes images through.
  """
  pool_size = state.images.shape[0]
  if pool_size == 0:
    return state, images

  def one(state, inputs):
    image, key = inputs
    swap_key, slot_key = jax.random.split(key)
    filling = state.count < pool_size
    swap = jnp.logical_and(~filling, jax.random.uniform(swap_key) > 0.5)
    slot = jnp.where(filling, state.count,
                     jax.random.randint(slot_key, (), 0, pool_size))
    stored = state.images[slot]
    out = jnp.where(swap, stored, image)
    write = jnp.logical_or(filling, swap)
    new_images = state.images.at[slot].set(jnp.where(write, image, stored))
    return PoolState(new_images, state.count + filling.astype(jnp.int32)), out

  keys = jax.random.split(key, images.shape[0])
  return jax.lax.scan(one, state, (images.astype(state.images.dtype), keys))


def query_global(state: PoolState, images: jax.Array, key: jax.Array,
                 axis_name: str) -> tuple[PoolState, jax.Array]:
  """`query` on the global batch, inside pmap over `axis_name`: the fakes of all devices are
  gathered in device order (the order of the global batch), every device runs the same query
  with the same `key` (so the pools stay identical), and each keeps its own share of the
  answer. One all-gather of the step's fakes per domain."""
  everyone = jax.lax.all_gather(images, axis_name, tiled=True)
  state, out = query(state, everyone, key)
  share = images.shape[0]
  return state, jax.lax.dynamic_slice_in_dim(out, jax.lax.axis_index(axis_name) * share, share)
