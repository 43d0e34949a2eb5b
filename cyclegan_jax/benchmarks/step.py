"""`python -m cyclegan_jax.benchmarks.step --config=configs/default.py`: the step's speed, memory.

Builds the models and a fresh state for the config at --size² crops and times the pmapped train
step on synthetic inputs already on the devices, on whatever devices JAX sees: CPU, GPU or TPU.
Prints one JSON record:
- state-init time (a new run's, cold) and restore time (a resumed run's: the state's shapes and
  a checkpoint of it restored onto them); step-compile time cold (empty caches), warm (as a
  restarted run: loaded by step_cache) and warm_traced (from JAX's persistent cache alone,
  traced and lowered);
- seconds per step, median and min over --steps timed steps after two warm-up steps; image
  pairs per second (one A image plus one B image is one pair);
- `flops_per_step`: the model's FLOPs, XLA's count for the step traced with XLA's own convs
  (`convolution.using('xla')`), the same whichever impl --conv_impl times, so rates compare
  across impls; it is per device, since every device runs the same program on its share of
  the batch; `executed_flops_per_step` is XLA's count for the impl timed, which also
  multiplies the zeros its rearrangements add (neither counts model.remat's recomputation);
- `achieved_flops_per_s` (model FLOPs / median step) and `peak_ratio`, the median over steps
  of each step's rate over a jnp.dot peak measured just before and after it (the better one):
  a shared machine's dot rate moves within minutes. `dot_peak_flops_per_s`: their median;
- the bytes each step all-reduces and all-gathers across devices (what multi-host training
  sends over the interconnect); peak memory (`huge_pages`: whether in huge pages); the bytes
  XLA assigns the compiled step per device (`compiled_memory`: arguments, outputs, temps, code);
- the input pipeline's images/s at the same crop size (`benchmarks.input`, synthetic jpgs).

  python -m cyclegan_jax.benchmarks.step --config=configs/default.py --size=128 --steps=5 --json
  python -m cyclegan_jax.benchmarks.step --config=configs/default.py --conv_impl=xla
"""

import functools
import json
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

from cyclegan_jax import host_memory

# As a command, it starts again with huge pages (as training), before the imports it would repeat.
if __name__ == '__main__':
  host_memory.use_huge_pages()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from cyclegan_jax import checkpointing, families, faults, parallel, step_cache  # noqa: E402
from cyclegan_jax.benchmarks import input as input_benchmark  # noqa: E402
from cyclegan_jax.benchmarks import xla_costs  # noqa: E402
from cyclegan_jax.models import convolution  # noqa: E402

WARMUP_STEPS = 2
DOT_SIZE = 2048  # 17 GFLOP: as fast as 4096² here, and cheap enough to run around every step.


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
  """This process's own peak resident memory. /proc's VmHWM first: in a process that another
  started (benchmarks.scaling's children), Linux's ru_maxrss also counts the parent's peak."""
  try:
    return input_benchmark.memory_mib()['VmHWM']
  except FileNotFoundError:  # No /proc (macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS.
    return rss / (2**20 if sys.platform == 'darwin' else 2**10)


def _device_peak_memory_mb() -> float | None:
  """Peak allocator memory of device 0 where the backend reports it (GPU, TPU; not CPU)."""
  peak = (jax.local_devices()[0].memory_stats() or {}).get('peak_bytes_in_use')
  return None if peak is None else peak / 2**20


def _compile_cold_and_warm(step, args, built_from) -> tuple[Any, Any, float, float, float]:
  """Compiles `step` through fresh caches, after dropping JAX's in-memory ones each time: cold
  and warm as training does (step_cache.compile_step: warm is a restarted run's, which loads
  the step), then traced (JAX's persistent cache alone: trace, lower, read XLA's executable
  back). Returns the lowered and compiled step and the three times."""
  with tempfile.TemporaryDirectory() as cache_dir:
    settings = {'jax_enable_compilation_cache': True, 'jax_compilation_cache_dir': cache_dir,
                'jax_persistent_cache_min_compile_time_secs': 0.0,
                'jax_persistent_cache_min_entry_size_bytes': 0}
    previous = {name: getattr(jax.config, name) for name in settings}
    for name, value in settings.items():
      jax.config.update(name, value)
    try:
      seconds = []
      for compile_step in (step_cache.compile_step, step_cache.compile_step,
                           lambda step, args, _: step_cache.compile_lowered(step.lower(*args))):
        jax.clear_caches()
        start = time.perf_counter()
        compiled = compile_step(step, args, built_from)
        seconds.append(time.perf_counter() - start)
    finally:
      for name, value in previous.items():
        jax.config.update(name, value)
  return step.lower(*args), compiled, *seconds


def restore_seconds(config, family, models, state) -> float:
  """What a resumed run spends on its state, with JAX's in-memory caches dropped: the state's
  shapes (`Family.state_shapes`, no init) and the restore of a checkpoint of `state`."""
  with tempfile.TemporaryDirectory() as workdir:
    manager = checkpointing.create_manager(workdir, keep=1)
    checkpointing.save(manager, state, config)
    manager.wait_until_finished()
    jax.clear_caches()
    start = time.perf_counter()
    jax.block_until_ready(checkpointing.restore(manager, family.state_shapes(config, models)))
    seconds = time.perf_counter() - start
    manager.close()
  return seconds


def step_flops(config, family, state, batch, impl: str) -> float | None:
  """XLA's FLOP count of the step with `impl`'s convs ('xla': the model's FLOPs), its residual
  blocks unrolled (XLA counts a loop's body once) and without remat, which keeps them rolled."""
  config = config.copy_and_resolve_references()
  config.model.unroll_blocks, config.model.remat = True, 'none'
  models = family.create_models(config, 1)
  step = parallel.pmap_step(functools.partial(family.train_step, models=models, config=config))
  with convolution.using(impl):
    return xla_costs.flops(step.lower(state, batch))


def input_images_per_s(config, config_path: str | None, size: int,
                       num_workers: int | None = None) -> float:
  """The train iterator's rate on synthetic jpgs a little larger than the crop, as data sets',
  with `num_workers` decoding threads (default: the input benchmark's)."""
  load_size = size * 286 // 256
  paths = {'config_path': config_path} if config_path else {}
  workers = {'num_workers': num_workers} if num_workers else {}
  record = input_benchmark.measure(
      **paths, **workers, source='folders',
      num_files=32, size=load_size, load_size=load_size, crop_size=size,
      batch_size=max(config.batch_size, 8), steps=20)
  return record['images_per_s']


def benchmark(config, steps: int, config_path: str | None = None, input_pipeline: bool = True,
              trace_dir: str | None = None) -> dict[str, Any]:
  """Compiles and times the train step of `config` (crop_size, batch_size already set) with
  the process's conv impl (`convolution.set_impl`)."""
  size, model = config.data.crop_size, config.model
  parallel.per_device_batch_size(config.batch_size)  # Fails early, saying why.
  host_batch = parallel.host_batch_size(config.batch_size)
  family = families.get(config)
  models = family.create_models(config, 1)
  start = time.perf_counter()
  state = parallel.replicate(family.fresh_state(config, models))
  init_s = time.perf_counter() - start
  rng = np.random.default_rng(config.seed)
  images = lambda c: rng.uniform(-1.0, 1.0, (host_batch, size, size, c)).astype(np.float32)
  channels = {'a': model.input_nc, 'b': model.output_nc}
  batch = parallel.device_put_sharded(
      parallel.shard_batch({d: images(channels[d]) for d in family.domains}))
  step = parallel.pmap_step(functools.partial(family.train_step, models=models, config=config))
  lowered, compiled, compile_s, compile_warm_s, compile_traced_s = _compile_cold_and_warm(
      step, (state, batch), built_from=(config.to_json_best_effort(), 1, 1.0))
  host_memory.release_freed()  # As training does after its compile.
  times, peaks = [], []
  for i in range(WARMUP_STEPS + steps):
    timed = i >= WARMUP_STEPS
    # Other processes on a shared machine only ever lower the peak: keep the better of the
    # rates just before and just after the step.
    peak_before = dot_peak_flops_per_s() if timed else None
    if trace_dir and i == WARMUP_STEPS:
      jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    if timed:
      times.append(time.perf_counter() - start)
      peaks.append(max(peak_before, dot_peak_flops_per_s()))
  if trace_dir:
    jax.profiler.stop_trace()
  if not np.isfinite(float(metrics['g_total'][0])):
    raise FloatingPointError('the benchmarked step produced a non-finite generator loss')

  median = statistics.median(times)
  flops = step_flops(config, family, state, batch, 'xla')
  achieved = None if flops is None else flops / median
  peak_ratio = None if flops is None else statistics.median(
      flops / t / p for t, p in zip(times, peaks))
  record = {
      'config': config_path,
      'generator': model.generator, 'discriminator': model.discriminator,
      'dtype': model.dtype, 'conv_impl': convolution.current_impl(),
      'size': size, 'batch': config.batch_size,
      'devices': jax.device_count(), 'platform': jax.default_backend(),
      'device_kind': jax.devices()[0].device_kind,
      'jax_version': jax.__version__, 'jaxlib_version': jaxlib.__version__,
      'init_s': round(init_s, 3), 'restore_s': None,  # Set last, below.
      'compile_s': round(compile_s, 3),
      'compile_warm_s': round(compile_warm_s, 3),
      'compile_warm_traced_s': round(compile_traced_s, 3), 'steps': steps,
      's_per_step_median': round(median, 5), 's_per_step_min': round(min(times), 5),
      'image_pairs_per_s': round(config.batch_size / median, 3),
      'input_images_per_s': (input_images_per_s(config, config_path, size)
                             if input_pipeline else None),
      'flops_per_step': flops, 'executed_flops_per_step': step_flops(
          config, family, state, batch, convolution.current_impl()),
      'flops_scope': 'per device',
      **xla_costs.collective_bytes(lowered),
      'compiled_memory': xla_costs.compiled_memory(compiled),
      'achieved_flops_per_s': achieved, 'dot_peak_flops_per_s': statistics.median(peaks),
      'peak_ratio': None if peak_ratio is None else round(peak_ratio, 4),
      'peak_rss_mb': round(_peak_rss_mb(), 1),
      'huge_pages': host_memory.huge_pages_in_use(),
      'device_peak_memory_mb': _device_peak_memory_mb(),
  }
  # Last: the checkpoint's host copies would add to peak_rss_mb, which is the step's.
  record['restore_s'] = round(restore_seconds(config, family, models, state), 3)
  return record


def main() -> None:
  """The command line. Its flags are defined here, not at import, so that importing this module
  (the tests do) registers none."""
  config_flag = config_flags.DEFINE_config_file('config', None, 'Config file (get_config).')
  size = flags.DEFINE_integer('size', None, 'Crop size; default: config.data.crop_size.')
  steps = flags.DEFINE_integer('steps', 10, 'Timed steps, after 2 warm-up steps.')
  batch = flags.DEFINE_integer('batch', None, 'Global batch; default: config.batch_size.')
  conv_impl = flags.DEFINE_enum('conv_impl', 'auto', list(convolution.IMPLS),
                                convolution.IMPL_HELP)
  as_json = flags.DEFINE_bool('json', False, 'Print the record as one JSON line (else indented).')
  input_pipeline = flags.DEFINE_bool(
      'input_pipeline', True, 'Also time the input pipeline at --size (writes temporary jpgs).')
  trace_dir = flags.DEFINE_string('trace_dir', None, 'Write a jax.profiler trace of the timed '
                                  'steps here (perfetto_trace.json.gz: ui.perfetto.dev).')
  flags.mark_flags_as_required(['config'])

  def run(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    faults.quiet_library_logs()
    config = config_flag.value
    if size.value is not None:
      config.data.crop_size = size.value
    if batch.value is not None:
      config.batch_size = batch.value
    convolution.set_impl(conv_impl.value)
    config_path = config_flags.get_config_filename(flags.FLAGS['config'])
    record = benchmark(config, steps.value, config_path, input_pipeline.value, trace_dir.value)
    print(json.dumps(record, indent=None if as_json.value else 2))

  app.run(run)


if __name__ == '__main__':
  main()
