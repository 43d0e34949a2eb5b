"""One child process of `benchmarks.scaling`; prints a JSON list, one record per --sizes entry.

What it measures needs a process of its own: peak memory is per process (each timed size gets a
fresh one), and a forced CPU device count must be set before JAX starts (each device count gets
one). The global batch is --batch_per_device × the devices this process sees.
- --steps N > 0: `step.benchmark` at each size (s/step, FLOPs, peak and compiled memory);
- --steps 0: the step lowered from shapes alone (collective bytes), and with --compile
  also compiled (`xla_costs.compiled_memory`); nothing is initialised or run, so a 1024² step costs
  one compile.

  python -m cyclegan_jax.benchmarks.scaling_worker --config=configs/test.py --sizes=32 --compile
"""

import functools
import json
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from cyclegan_jax import families, faults, parallel, step_cache
from cyclegan_jax.benchmarks import step as step_benchmark
from cyclegan_jax.benchmarks import xla_costs
from cyclegan_jax.models import convolution


def _per_device(tree: Any, devices: int) -> Any:
  """Shapes with pmap's leading device axis."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((devices, *x.shape), x.dtype), tree)


def lowered_record(config, compile_step: bool) -> dict[str, Any]:
  """The pmapped step of `config` (crop_size, batch_size set) on the local devices, lowered
  from the shapes of its state and batch (nothing is computed), and compiled if asked."""
  size, devices = config.data.crop_size, jax.local_device_count()
  family = families.get(config)
  models = family.create_models(config, 1)
  state = _per_device(family.state_shapes(config, models), devices)
  channels = {'a': config.model.input_nc, 'b': config.model.output_nc}
  batch = {d: jax.ShapeDtypeStruct(
      (devices, parallel.per_device_batch_size(config.batch_size), size, size, channels[d]),
      jnp.float32) for d in family.domains}
  step = parallel.pmap_step(functools.partial(family.train_step, models=models, config=config))
  lowered = step.lower(state, batch)
  return {
      'size': size, 'batch': config.batch_size, 'devices': devices,
      'platform': jax.default_backend(), 'conv_impl': convolution.current_impl(),
      **xla_costs.collective_bytes(lowered),
      'compiled_memory': (xla_costs.compiled_memory(step_cache.compile_lowered(lowered))
                          if compile_step else None),
  }


def main() -> None:
  """The command line (`benchmarks.scaling` builds it; flags defined here, not at import)."""
  config_flag = config_flags.DEFINE_config_file('config', None, 'Config file (get_config).')
  sizes = flags.DEFINE_list('sizes', None, 'Crop sizes, one record each.')
  batch_per_device = flags.DEFINE_integer('batch_per_device', 1, 'Images per device and step.')
  steps = flags.DEFINE_integer('steps', 0, 'Timed steps per size; 0: lower only.')
  compile_step = flags.DEFINE_bool('compile', False, 'With --steps=0: also compile the step.')
  conv_impl = flags.DEFINE_enum('conv_impl', 'auto', list(convolution.IMPLS),
                                convolution.IMPL_HELP)
  flags.mark_flags_as_required(['config', 'sizes'])

  def run(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    faults.quiet_library_logs()
    config = config_flag.value
    config.batch_size = batch_per_device.value * jax.device_count()
    convolution.set_impl(conv_impl.value)
    config_path = config_flags.get_config_filename(flags.FLAGS['config'])
    records = []
    for size in sizes.value:
      config.data.crop_size = int(size)
      records.append(
          step_benchmark.benchmark(config, steps.value, config_path, input_pipeline=False)
          if steps.value else lowered_record(config, compile_step.value))
    print(json.dumps(records))

  app.run(run)


if __name__ == '__main__':
  main()
