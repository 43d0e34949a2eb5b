"""The image pool: fill phase, swap statistics, provenance of returned images, jit and pmap."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclegan_jax import image_pool


def distinct_images(n, shape=(2, 2, 3), start=0.0):
  """n images, image i filled with the value start + i."""
  values = start + jnp.arange(n, dtype=jnp.float32)
  return jnp.broadcast_to(values.reshape((n,) + (1,) * len(shape)), (n,) + shape)


def test_fill_phase_returns_and_stores_inputs():
  state = image_pool.init(5, (2, 2, 3))
  images = distinct_images(5)
  state, out = jax.jit(image_pool.query)(state, images, jax.random.key(0))
  np.testing.assert_array_equal(out, images)
  np.testing.assert_array_equal(state.images, images)
  assert int(state.count) == 5


def test_fill_phase_across_calls_then_full():
  state = image_pool.init(5, (2, 2, 3))
  query = jax.jit(image_pool.query)
  state, out = query(state, distinct_images(3), jax.random.key(0))
  np.testing.assert_array_equal(out, distinct_images(3))
  assert int(state.count) == 3
  # 3 more: two fill the pool (and come back unchanged), the third meets a full pool.
  more = distinct_images(3, start=3.0)
  state, out = query(state, more, jax.random.key(1))
  np.testing.assert_array_equal(out[:2], more[:2])
  assert int(state.count) == 5
  stored = set(np.asarray(state.images[:, 0, 0, 0]).tolist())
  returned = float(out[2, 0, 0, 0])
  if returned == 5.0:  # Not swapped: the pool still holds 0..4.
    assert stored == {0.0, 1.0, 2.0, 3.0, 4.0}
  else:  # Swapped: an old image came back and 5 took its slot.
    assert returned in {0.0, 1.0, 2.0, 3.0, 4.0}
    assert stored == ({0.0, 1.0, 2.0, 3.0, 4.0} - {returned}) | {5.0}


def test_pool_size_zero_passes_through():
  state = image_pool.init(0, (2, 2, 3))
  images = distinct_images(4)
  new_state, out = jax.jit(image_pool.query)(state, images, jax.random.key(0))
  np.testing.assert_array_equal(out, images)
  assert new_state.images.shape == (0, 2, 2, 3) and int(new_state.count) == 0


POOL = 5
QUERIES = 10_000


@functools.partial(jax.jit, static_argnums=1)
def _run_queries(key, num_queries):
  """Fills a pool of single-pixel images 0..4, then makes `num_queries` one-image queries
  with the values 5, 6, ...; returns (final state, the values returned by those queries)."""
  state = image_pool.init(POOL, (1, 1, 1))
  fill_key, key = jax.random.split(key)
  state, _ = image_pool.query(state, distinct_images(POOL, (1, 1, 1)), fill_key)

  def step(state, inputs):
    value, key = inputs
    state, out = image_pool.query(state, jnp.full((1, 1, 1, 1), value), key)
    return state, out[0, 0, 0, 0]

  values = POOL + jnp.arange(num_queries, dtype=jnp.float32)
  return jax.lax.scan(step, state, (values, jax.random.split(key, num_queries)))


@pytest.fixture(scope='module')
def queries():
  state, returned = _run_queries(jax.random.key(42), QUERIES)
  return state, np.asarray(returned)


def test_swap_rate_is_one_half(queries):
  _, returned = queries
  inputs = POOL + np.arange(QUERIES, dtype=np.float32)
  rate = np.mean(returned != inputs)
  assert abs(rate - 0.5) <= 0.02, rate  # σ = 0.005.


def test_swapped_images_come_from_history(queries):
  """Replays the queries slot by slot: every returned image that is not the query's own was in
  the pool at that moment, and the replay ends with exactly the final pool."""
  state, returned = queries
  pool = list(range(POOL))
  slot_uses = np.zeros(POOL, int)
  for t, value in enumerate(returned):
    new = POOL + t
    if value == new:
      continue
    assert value in pool, (t, value)  # Came from history, and was still stored.
    slot = pool.index(value)
    pool[slot] = new  # The new image takes the returned image's place.
    slot_uses[slot] += 1
  np.testing.assert_array_equal(state.images[:, 0, 0, 0], np.asarray(pool, np.float32))
  assert int(state.count) == POOL
  # Slots are drawn uniformly: about 1000 swaps each (σ ≈ 28).
  assert np.all(np.abs(slot_uses - slot_uses.sum() / POOL) < 150), slot_uses


def test_seeded_queries_are_reproducible(queries):
  _, returned = queries
  _, again = _run_queries(jax.random.key(42), QUERIES)
  np.testing.assert_array_equal(again, returned)
  _, other = _run_queries(jax.random.key(7), QUERIES)
  assert np.any(np.asarray(other) != returned)


def test_query_global_is_one_pool_of_the_global_batch_on_every_device():
  """Under pmap over 8 devices with 3 images each, the global pool equals one query of the 24
  images in device order with the same key: every device holds that pool, and gets back its
  own 3 of the answer."""
  n = jax.local_device_count()
  assert n == 8  # tests/conftest.py forces 8 CPU devices.
  pool_size, per_device = 10, 3

  @functools.partial(jax.pmap, axis_name='batch')
  def query_global(state, images, key):
    return image_pool.query_global(state, images, key, 'batch')

  single = image_pool.init(pool_size, (2, 2, 1))
  state = jax.tree.map(lambda x: jnp.stack([x] * n), single)
  query = jax.jit(image_pool.query)
  for call in range(3):  # 24 images a call: the pool fills in the first, then swaps.
    everyone = distinct_images(n * per_device, (2, 2, 1), 100.0 * call)
    key = jax.random.key(call)
    state, out = query_global(state, everyone.reshape((n, per_device, 2, 2, 1)),
                              jnp.stack([key] * n))
    single, expected = query(single, everyone, key)
    np.testing.assert_array_equal(out.reshape(everyone.shape), expected)
    for d in range(n):
      np.testing.assert_array_equal(state.images[d], single.images)
  np.testing.assert_array_equal(state.count, np.full(n, pool_size))
  assert len(set(np.asarray(single.images[:, 0, 0, 0]).tolist())) == pool_size
