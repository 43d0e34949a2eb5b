"""The one place that knows about devices: pmap wrapping, batch sharding, replication.

Everything else works on per-device values. The step is written with explicit collectives over
`AXIS_NAME`, so this module could wrap it with `jax.shard_map` instead of `jax.pmap` unchanged.
"""

import collections
from collections.abc import Callable, Iterator
from typing import Any

import flax.jax_utils
import jax
import numpy as np

AXIS_NAME = 'batch'


def per_device_batch_size(global_batch_size: int, device_count: int | None = None) -> int:
  """Splits the global batch evenly over all devices of all hosts, or says why it cannot."""
  device_count = jax.device_count() if device_count is None else device_count
  if global_batch_size <= 0 or global_batch_size % device_count:
    raise ValueError(
        f'batch_size={global_batch_size} must be a positive multiple of the {device_count} '
        f'devices (one equal share per device); try --config.batch_size={device_count}.')
  return global_batch_size // device_count


def host_batch_size(global_batch_size: int) -> int:
  """Images this host feeds per step: its local devices' share of the global batch."""
  return per_device_batch_size(global_batch_size) * jax.local_device_count()


def shard_batch(host_batch: Any) -> Any:
  """Reshapes every [host_batch, ...] array to [local_devices, per_device_batch, ...]."""
  n = jax.local_device_count()

  def reshape(x):
    if x.shape[0] % n:
      raise ValueError(f'host batch of {x.shape[0]} does not split over {n} local devices')
    return np.reshape(x, (n, x.shape[0] // n) + x.shape[1:])

  return jax.tree.map(reshape, host_batch)


def replicate(tree: Any) -> Any:
  """Puts one copy of `tree` on every local device (leading device axis).

  The mesh axis is named like pmap's own outputs; any other name makes the first step's
  outputs look different from its inputs and costs a second full compilation.
  """
  return flax.jax_utils.replicate(tree, axis_name=AXIS_NAME)


def device_put_sharded(host_batch: Any) -> Any:
  """Moves a [local_devices, ...] tree onto the local devices the way pmap lays them out."""
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (AXIS_NAME,))
  return jax.device_put(host_batch, jax.NamedSharding(mesh, jax.P(AXIS_NAME)))


def unreplicate(tree: Any) -> Any:
  """Takes device 0's copy of a replicated tree."""
  return flax.jax_utils.unreplicate(tree)


def pmap_step(step_fn: Callable[..., Any], donate_state: bool = True) -> Callable[..., Any]:
  """Wraps a per-device `step_fn(state, batch)` for data parallelism over local devices."""
  return jax.pmap(step_fn, axis_name=AXIS_NAME, donate_argnums=(0,) if donate_state else ())


def prefetch_to_device(iterator: Iterator[Any], size: int = 2) -> Iterator[Any]:
  """Keeps `size` sharded batches in flight on the devices ahead of the step."""
  queue = collections.deque()
  for batch in iterator:
    queue.append(device_put_sharded(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
