"""The one place that knows about devices: pmap wrapping, batch sharding, replication.

Everything else works on per-device values. The step is written with explicit collectives over
`AXIS_NAME`, so this module could wrap it with `jax.shard_map` instead of `jax.pmap` unchanged.
"""

import collections
from collections.abc import Callable, Iterator, Mapping, Sequence
import secrets
from typing import Any
import zlib

from etils import epath
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
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


def host_batch_size(global_batch_size: int, local_devices: int | None = None) -> int:
  """Images this host feeds per step: its local devices' share of the global batch."""
  local_devices = jax.local_device_count() if local_devices is None else local_devices
  return per_device_batch_size(global_batch_size) * local_devices


def shard_batch(host_batch: Any, local_devices: int | None = None) -> Any:
  """Reshapes every [host_batch, ...] array to [local_devices, per_device_batch, ...]."""
  n = jax.local_device_count() if local_devices is None else local_devices

  def reshape(x):
    if x.shape[0] % n:
      raise ValueError(f'host batch of {x.shape[0]} does not split over {n} local devices')
    return np.reshape(x, (n, x.shape[0] // n) + x.shape[1:])

  return jax.tree.map(reshape, host_batch)


def _pmap_sharding(devices: Sequence[jax.Device] | None = None) -> jax.sharding.NamedSharding:
  """Leading axis over `devices` (default: the local ones), named like pmap's own outputs: any
  other axis name makes a step's outputs look unlike its inputs and costs a second full
  compilation."""
  mesh = jax.sharding.Mesh(np.array(devices or jax.local_devices()), (AXIS_NAME,))
  return jax.NamedSharding(mesh, jax.P(AXIS_NAME))


def _is_key(x: Any) -> bool:
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def replicate(tree: Any, devices: Sequence[jax.Device] | None = None) -> Any:
  """Puts one copy of `tree` on every one of `devices` (default: the local ones; leading
  device axis), laid out as a `jax.pmap` over those devices lays out its outputs.

  Each device gets its own buffer, copied by a transfer, so no per-leaf stacking op is compiled
  (flax's replicate compiled ~70 tiny programs per run start). On CPU a plain `device_put` of
  a numpy array may alias its memory instead, in every device at once; the first step could
  then not donate the state, and would hold two copies of it at its peak.
  """
  devices = devices or jax.local_devices()
  sharding = _pmap_sharding(devices)

  def put(x):
    data = np.asarray(jax.random.key_data(x) if _is_key(x) else x)
    source = jax.device_put(data[None], devices[0])
    copies = [jax.device_put(source, d, may_alias=False) for d in devices]
    out = jax.make_array_from_single_device_arrays((len(devices),) + data.shape, sharding,
                                                   copies)
    return jax.random.wrap_key_data(out, impl=jax.random.key_impl(x)) if _is_key(x) else out

  return jax.tree.map(put, tree)


def unreplicate(tree: Any) -> Any:
  """Device 0's copy of a replicated tree as host numpy arrays (PRNG keys as their key data)."""

  def get(x):
    x = jax.random.key_data(x) if _is_key(x) else x
    return np.asarray(x.addressable_shards[0].data)[0]

  return jax.tree.map(get, tree)


def fingerprint(tree: Any) -> int:
  """CRC32 of every leaf's bytes, in tree order: equal trees give equal fingerprints."""
  crc = 0
  for leaf in jax.tree.leaves(tree):
    crc = zlib.crc32(np.ascontiguousarray(leaf).tobytes(), crc)
  return crc


def check_same_on_all_processes(tree: Any, what: str) -> int:
  """Stops the run if the processes hold different copies of `tree` (replicas drifted apart).

  Returns the fingerprint, which every process logs the same. One tiny all-gather.
  """
  mine = fingerprint(tree)
  if jax.process_count() > 1:
    everyone = multihost_utils.process_allgather(np.array([mine], np.uint32), tiled=True)
    if len(set(everyone.tolist())) != 1:
      raise RuntimeError(f'{what} differ between processes: fingerprints '
                         f'{", ".join(f"{p}: {f:08x}" for p, f in enumerate(everyone))}.')
  return mine


def check_shared_workdir(workdir: str) -> None:
  """Stops a multi-process run whose processes do not all see the same workdir.

  orbax writes each checkpoint from process 0 only, so every process must be able to read what
  process 0 wrote: a gs:// bucket (taken on trust), a folder every host mounts, or one machine's
  disk when all processes run there. Process 0 writes a token file with a fresh random name,
  every process looks for it, and all agree on the outcome.
  """
  if jax.process_count() == 1 or workdir.startswith('gs://'):
    return
  nonce = int(multihost_utils.broadcast_one_to_all(np.uint32(secrets.randbits(32))))
  token = epath.Path(workdir) / f'.shared_workdir_check_{nonce:08x}'
  if jax.process_index() == 0:
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text('written by process 0')
  multihost_utils.sync_global_devices('check_shared_workdir: token written')
  seen = multihost_utils.process_allgather(np.array([token.exists()]), tiled=True)
  if jax.process_index() == 0:
    token.unlink()
  blind = [str(p) for p, ok in enumerate(seen) if not ok]
  if blind:
    raise ValueError(
        f'--workdir={workdir} is not shared: process {", ".join(blind)} of '
        f'{jax.process_count()} cannot see a file process 0 writes there. orbax writes '
        'checkpoints from process 0 only, so the others would find nothing to restore: use a '
        'gs:// bucket (or a folder every host mounts).')


def device_put_sharded(host_batch: Any) -> Any:
  """Moves a [local_devices, ...] tree onto the local devices the way pmap lays them out."""
  return jax.device_put(host_batch, _pmap_sharding())


def pmap_step(step_fn: Callable[..., Any], donate_state: bool = True) -> Callable[..., Any]:
  """Wraps a per-device `step_fn(state, batch)` for data parallelism over local devices."""
  return jax.pmap(step_fn, axis_name=AXIS_NAME, donate_argnums=(0,) if donate_state else ())


def in_step(modules: Mapping[str, Any]) -> dict[str, Any]:
  """The modules as the pmapped step runs them: batch norm (in those that have it) normalises
  over the whole batch across devices, so a step does not depend on how its batch is split."""
  return {name: module.clone(batch_axis=AXIS_NAME) if hasattr(module, 'batch_axis') else module
          for name, module in modules.items()}


def share_of_global(draw: Callable[[int], jax.Array], local_batch: int) -> jax.Array:
  """This device's rows of `draw(global batch size)`, inside the pmapped step. `draw` uses a
  key that all devices share, so example i of the global batch gets the same random values
  whatever the topology (devices hold the global batch in device order, as the data does)."""
  rows = draw(local_batch * jax.lax.axis_size(AXIS_NAME))
  return jax.lax.dynamic_slice_in_dim(rows, jax.lax.axis_index(AXIS_NAME) * local_batch,
                                      local_batch)


def next_in_global_batch(x: jax.Array) -> jax.Array:
  """Inside the pmapped step: for each of this device's examples, the next example of the
  global batch (the last one's: the first), whatever the topology."""
  everyone = jax.lax.all_gather(x, AXIS_NAME, tiled=True)
  return share_of_global(lambda n: jnp.roll(everyone, -1, axis=0), x.shape[0])


def prefetch_to_device(iterator: Iterator[Any], size: int = 2) -> Iterator[Any]:
  """Keeps `size` sharded batches in flight on the devices ahead of the step."""
  queue = collections.deque()
  for batch in iterator:
    queue.append(device_put_sharded(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
