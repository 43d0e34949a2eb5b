"""`python -m cyclegan_jax.benchmark --config=configs/default.py`: speed and memory of the step.

Builds the models and a fresh state for the config at --size² crops and times the pmapped train
step on synthetic inputs already on the devices (no data pipeline), on whatever devices JAX
sees: CPU, GPU or TPU. Prints one JSON record: state-init and step-compile times; seconds per
step, median and min over --steps timed steps after two warm-up steps; image pairs per second
(one A image plus one B image is one pair); XLA's FLOP count of the compiled step, which is per
device, since every device runs the same program on its share of the batch; the FLOP rate that
gives per device, against a jnp.dot peak measured in the same process; the bytes each step
all-reduces across devices (what multi-host training sends over the interconnect); and peak
memory.

The input pipeline's rate is measured on its own by `python -m cyclegan_jax.benchmark_input`,
so `input_images_per_s` is null here.

  python -m cyclegan_jax.benchmark --config=configs/default.py --size=128 --steps=5 \
      --config.model.generator=resnet_6blocks --json
"""

import functools
import json
import math
import re
import resource
import statistics
import sys
import time
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import jaxlib
from ml_collections import config_flags
import numpy as np

from cyclegan_jax import families, parallel

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (get_config).')
_SIZE = flags.DEFINE_integer('size', None, 'Crop size; default: config.data.crop_size.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps, after 2 warm-up steps.')
_BATCH = flags.DEFINE_integer('batch', None, 'Global batch; default: config.batch_size.')
_JSON = flags.DEFINE_bool('json', False, 'Print the record as one JSON line (else indented).')
_CACHE_DIR = flags.DEFINE_string('compilation_cache_dir', None,
                                 'Persistent XLA compilation cache directory (off if unset).')
flags.mark_flags_as_required(['config'])

WARMUP_STEPS = 2
DOT_SIZE = 4096


def _flops(compiled: Any) -> float | None:
  """The 'flops' entry of XLA's cost analysis, which is a dict, a list of one, or missing."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # Some backends do not implement it.
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops is not None and flops > 0 else None


_ALL_REDUCE_RESULT = re.compile(r'"stablehlo\.all_reduce".*?\}\) : \(.*?\) -> (.*?)$',
                                re.DOTALL | re.MULTILINE)
_TENSOR = re.compile(r'tensor<((?:\d+x)*)[a-z]+(\d+)>')  # Dimensions, element bits.


def allreduce_bytes(stablehlo: str) -> int:
  """Bytes that one step all-reduces across devices (gradients, batch statistics, metrics),
  summed over the results of every all_reduce in the lowered (StableHLO) step."""
  total = 0
  for results in _ALL_REDUCE_RESULT.findall(stablehlo):
    for dims, bits in _TENSOR.findall(results):
      total += math.prod(int(d) for d in dims.split('x') if d) * max(int(bits) // 8, 1)
  return total


def dot_peak_flops_per_s(repeats: int = 3) -> float:
  """Best-of-`repeats` FLOP rate of a jitted float32 DOT_SIZE² matmul on the default device."""
  x = jax.random.normal(jax.random.key(0), (DOT_SIZE, DOT_SIZE), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(x, x).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    dot(x, x).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * DOT_SIZE**3 / min(times)


def _peak_rss_mb() -> float:
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS.
  return rss / (2**20 if sys.platform == 'darwin' else 2**10)


def _device_peak_memory_mb() -> float | None:
  """Peak allocator memory of device 0 where the backend reports it (GPU, TPU; not CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else peak / 2**20


def benchmark(config, steps: int) -> dict[str, Any]:
  """Compiles and times the train step of `config` (crop_size, batch_size already set)."""
  size, model = config.data.crop_size, config.model
  parallel.per_device_batch_size(config.batch_size)  # Fails early, saying why.
  host_batch = parallel.host_batch_size(config.batch_size)
  family = families.get(config)
  models = family.create_models(config, 1)
  start = time.perf_counter()
  state = parallel.replicate(
      family.create_train_state(config, models, jax.random.key(config.seed)))
  init_s = time.perf_counter() - start
  rng = np.random.default_rng(config.seed)
  images = lambda c: rng.uniform(-1.0, 1.0, (host_batch, size, size, c)).astype(np.float32)
  batch = parallel.device_put_sharded(
      parallel.shard_batch({'a': images(model.input_nc), 'b': images(model.output_nc)}))
  step = parallel.pmap_step(functools.partial(family.train_step, models=models, config=config))
  # The peak is measured before and after the steps and the best kept: other processes on a
  # shared machine only ever lower it.
  peak = dot_peak_flops_per_s()

  start = time.perf_counter()
  lowered = step.lower(state, batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  times = []
  for i in range(WARMUP_STEPS + steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    if i >= WARMUP_STEPS:
      times.append(time.perf_counter() - start)
  if not np.isfinite(float(metrics['g_total'][0])):
    raise FloatingPointError('the benchmarked step produced a non-finite generator loss')

  median = statistics.median(times)
  flops = _flops(compiled)
  achieved = None if flops is None else flops / median
  peak = max(peak, dot_peak_flops_per_s())
  return {
      'config': config_flags.get_config_filename(flags.FLAGS['config']),
      'generator': model.generator, 'discriminator': model.discriminator,
      'dtype': model.dtype, 'size': size, 'batch': config.batch_size,
      'devices': jax.device_count(), 'platform': jax.default_backend(),
      'device_kind': jax.devices()[0].device_kind,
      'jax_version': jax.__version__, 'jaxlib_version': jaxlib.__version__,
      'compilation_cache': _CACHE_DIR.value is not None,
      'init_s': round(init_s, 3), 'compile_s': round(compile_s, 3), 'steps': steps,
      's_per_step_median': round(median, 5), 's_per_step_min': round(min(times), 5),
      'image_pairs_per_s': round(config.batch_size / median, 3),
      'input_images_per_s': None,  # See `python -m cyclegan_jax.benchmark_input`.
      'flops_per_step': flops, 'flops_scope': 'per device',
      'allreduce_bytes_per_step': allreduce_bytes(lowered.as_text()),
      'achieved_flops_per_s': achieved, 'dot_peak_flops_per_s': peak,
      'peak_ratio': None if achieved is None else round(achieved / peak, 4),
      'peak_rss_mb': round(_peak_rss_mb(), 1),
      'device_peak_memory_mb': _device_peak_memory_mb(),
  }


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _CACHE_DIR.value:
    jax.config.update('jax_compilation_cache_dir', _CACHE_DIR.value)
  config = _CONFIG.value
  if _SIZE.value is not None:
    config.data.crop_size = _SIZE.value
  if _BATCH.value is not None:
    config.batch_size = _BATCH.value
  record = benchmark(config, _STEPS.value)
  print(json.dumps(record, indent=None if _JSON.value else 2))


if __name__ == '__main__':
  app.run(main)
